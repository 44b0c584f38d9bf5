"""Device sharding through the real harness: xdist workers, the lease pool, real children."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import psutil
import pytest

RECORDER = Path(__file__).with_name("record_devices.py")
pytestmark = pytest.mark.e2e


def write_spec(
    folder: Path, name: str, gpus: int = 1, sleep: float = 0.3, cpu_ok: bool = True, command: list[str] | None = None
) -> None:
    command = command or [
        "{python}",
        str(RECORDER),
        "--trace",
        "{run_dir}/trace.jsonl",
        "--sleep",
        str(sleep),
        "--name",
        name,
    ]
    spec = {"id": name, "command": command, "gpus": gpus, "cpu_ok": cpu_ok, "timeout": 60, "min_steps_logged": 0}
    (folder / f"{name}.yaml").write_text(json.dumps(spec))


def trace(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "trace.jsonl").read_text().splitlines()]


def assert_exclusive(records: list[dict]) -> None:
    for a, b in itertools.combinations(records, 2):
        overlap = a["start"] < b["end"] and b["start"] < a["end"]
        shared = set(a["devices"].split(",")) & set(b["devices"].split(","))
        assert not (overlap and shared), f"{a['name']} and {b['name']} overlapped on {shared}"


@pytest.fixture
def mixed_specs(tmp_path: Path) -> Path:
    folder = tmp_path / "project"
    (folder / "specs").mkdir(parents=True)
    for i in range(6):
        write_spec(folder / "specs", f"one_{i}", gpus=1, sleep=0.4)
    for i in range(2):
        write_spec(folder / "specs", f"two_{i}", gpus=2, sleep=0.6)
    write_spec(folder / "specs", "four", gpus=4, sleep=0.5)
    return folder


def test_no_device_shared_and_k_distinct(harness, mixed_specs: Path) -> None:
    run = harness("run", "--fake-gpus", "4", cwd=mixed_specs)
    assert run.code == 0, run.output
    records = trace(run.run_dir)
    assert len(records) == 9
    assert_exclusive(records)
    for record in records:
        devices = record["devices"].split(",")
        wanted = 4 if record["name"] == "four" else 2 if record["name"].startswith("two") else 1
        assert len(set(devices)) == len(devices) == wanted, record
        assert set(devices) <= {"0", "1", "2", "3"}
    assert {s["outcome"] for s in run.results["specs"]} == {"passed"}
    # How well it scheduled, said at the end and kept in results.json and the report.
    figures = run.results["schedule"]
    assert set(figures) == {"makespan_s", "plan_expected_s", "lower_bound_s", "idle_device_s", "plan_guesses"}
    assert figures["makespan_s"] > 0 and figures["lower_bound_s"] > 0 and figures["idle_device_s"] >= 0
    line = f"makespan {figures['makespan_s']:.1f} s, plan expected {figures['plan_expected_s']:.1f} s"
    assert line in run.output
    assert line in (run.run_dir / "report.html").read_text()


@pytest.mark.parametrize("visible", ["3,5", "GPU-aaaa-1111,GPU-bbbb-2222", "MIG-1c2d,MIG-3e4f"])
def test_callers_list_respected(harness, tmp_path: Path, visible: str) -> None:
    folder = tmp_path / "project"
    (folder / "specs").mkdir(parents=True)
    for i in range(4):
        write_spec(folder / "specs", f"one_{i}", gpus=1, sleep=0.3)
    write_spec(folder / "specs", "pair", gpus=2, sleep=0.3)
    run = harness("run", cwd=folder, env={"CUDA_VISIBLE_DEVICES": visible})
    assert run.code == 0, run.output
    allowed = set(visible.split(","))
    records = trace(run.run_dir)
    assert_exclusive(records)
    for record in records:
        assert set(record["devices"].split(",")) <= allowed, record
    assert next(r for r in records if r["name"] == "pair")["devices"].split(",") in (
        visible.split(","),
        visible.split(",")[::-1],
    )


def test_skip_reasons(harness, tmp_path: Path) -> None:
    folder = tmp_path / "project"
    (folder / "specs").mkdir(parents=True)
    write_spec(folder / "specs", "fits", gpus=1)
    write_spec(folder / "specs", "too_big", gpus=3)
    write_spec(folder / "specs", "needs_cuda", gpus=1, cpu_ok=False)
    plan = harness("plan", "--fake-gpus", "2", cwd=folder)
    assert plan.code == 0, plan.output
    assert "too_big: needs 3 devices, this run has 2" in plan.output
    assert "needs_cuda: needs 1 GPU and is not cpu_ok (fake devices)" in plan.output
    run = harness("run", "--fake-gpus", "2", cwd=folder)
    assert run.code == 0, run.output
    outcomes = {s["id"]: (s["outcome"], s["reason"]) for s in run.results["specs"]}
    assert outcomes["fits"][0] == "passed"
    assert outcomes["too_big"] == (
        "skipped",
        "needs 3 devices, this run has 2 (2 fake devices [0, 1] from --fake-gpus 2)",
    )
    assert outcomes["needs_cuda"][0] == "skipped" and "not cpu_ok" in outcomes["needs_cuda"][1]
    assert [r["name"] for r in trace(run.run_dir)] == ["fits"]


def test_worker_killed_frees_its_lease(harness, tmp_path: Path) -> None:
    """A run that SIGKILLs its own xdist worker: the lease returns and the other specs finish."""
    folder = tmp_path / "project"
    (folder / "specs").mkdir(parents=True)
    killer = [
        "{python}",
        "-c",
        "import os, signal, time; os.kill(os.getppid(), signal.SIGKILL); time.sleep(30)  # trainspec-killer",
    ]
    write_spec(folder / "specs", "kills_worker", gpus=2, command=killer)
    for i in range(3):
        write_spec(folder / "specs", f"after_{i}", gpus=2, sleep=0.2)
    run = harness("run", "--fake-gpus", "2", cwd=folder, timeout=120)
    assert run.code == 1, run.output
    outcomes = {s["id"]: s["outcome"] for s in run.results["specs"]}
    assert outcomes["kills_worker"] in ("error", "failed")
    assert all(outcomes[f"after_{i}"] == "passed" for i in range(3)), outcomes
    assert_exclusive(trace(run.run_dir))
    leftovers = [p for p in psutil.process_iter(["cmdline"]) if "trainspec-killer" in " ".join(p.info["cmdline"] or [])]
    assert not leftovers, leftovers
    holders = json.loads((run.run_dir / "leases.json").read_text())["holders"]
    assert all(not psutil.pid_exists(h["owner"][0]) for h in holders.values()), holders


def test_cpu_threads_follow_devices_held(harness, tmp_path: Path) -> None:
    folder = tmp_path / "project"
    (folder / "specs").mkdir(parents=True)
    write_spec(folder / "specs", "pair", gpus=2)
    write_spec(folder / "specs", "single", gpus=1)
    run = harness("run", "--fake-gpus", "2", cwd=folder)
    assert run.code == 0, run.output
    threads = {r["name"]: int(r["threads"]) for r in trace(run.run_dir)}
    cores = len(psutil.Process().cpu_affinity())
    assert threads["pair"] == max(1, cores)
    assert threads["single"] == max(1, cores // 2)
