"""Sharing GPUs through the real harness: machine-wide leases across concurrent runs, packing by memory."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ..gpu_stand_ins import install_nvidia_smi
from .test_sharding import RECORDER

pytestmark = pytest.mark.e2e


def write_spec(
    folder: Path, name: str, trace: Path, sleep: float, until_started: str | None = None, **fields: object
) -> None:
    command = ["{python}", str(RECORDER), "--trace", str(trace), "--sleep", str(sleep), "--name", name]
    command += ["--until-started", until_started] if until_started else []
    spec = {"id": name, "command": command, "gpus": 1, "cpu_ok": True, "timeout": 120, "min_steps_logged": 0, **fields}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.yaml").write_text(json.dumps(spec))


def start_run(project: Path, run_dir: Path, env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "harness", "run", *args, "--run-dir", str(run_dir)],
        cwd=project,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def records(trace: Path) -> list[dict]:
    return [json.loads(line) for line in trace.read_text().splitlines()]


def overlap(a: dict, b: dict) -> bool:
    return a["start"] < b["end"] and b["start"] < a["end"]


def test_two_concurrent_runs_never_put_two_exclusive_specs_on_one_device(tmp_path: Path) -> None:
    bin_dir = install_nvidia_smi(tmp_path / "bin")
    trace = tmp_path / "trace.jsonl"
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "TRAINSPEC_LEASE_DIR": str(tmp_path / "leases"),
        "TRAINSPEC_CACHE_DIR": str(tmp_path / "cache"),
    }
    env.pop("CUDA_VISIBLE_DEVICES", None)
    runs = {}
    for run in ("a", "b"):
        for i in range(4):
            # a0 runs on until a spec of run b has started after it, however slowly b's workers start
            # and whichever run asks first: the other device goes to b meanwhile, so the runs overlap.
            until = "b" if run + str(i) == "a0" else None
            write_spec(tmp_path / run / "specs", f"{run}{i}", trace, sleep=3.0, until_started=until)
        runs[run] = start_run(tmp_path / run, tmp_path / f"run-{run}", env, "--gpus", "2")
    outputs = {run: proc.communicate(timeout=300)[0] for run, proc in runs.items()}
    for run, proc in runs.items():
        assert proc.returncode == 0, outputs[run]
        assert {s["outcome"] for s in json.loads((tmp_path / f"run-{run}" / "results.json").read_text())["specs"]} == {
            "passed"
        }
    done = records(trace)
    assert len(done) == 8
    assert all(r["devices"] in ("0", "1") for r in done)
    clashes = [
        (a["name"], b["name"])
        for a, b in itertools.combinations(done, 2)
        if a["name"][0] != b["name"][0] and a["devices"] == b["devices"] and overlap(a, b)
    ]
    assert clashes == []
    # The two runs did run at the same time (on different devices), else this proved nothing.
    assert any(
        overlap(a, b)
        for a, b in itertools.product(
            [r for r in done if r["name"][0] == "a"], [r for r in done if r["name"][0] == "b"]
        )
    )
    waits = [
        s["lease_wait"]
        for run in "ab"
        for s in json.loads((tmp_path / f"run-{run}" / "results.json").read_text())["specs"]
    ]
    assert max(waits) > 0


def test_concurrent_fake_device_runs_do_not_queue_behind_each_other(tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    env = {
        **os.environ,
        "TRAINSPEC_LEASE_DIR": str(tmp_path / "leases"),
        "TRAINSPEC_CACHE_DIR": str(tmp_path / "cache"),
    }
    runs = []
    for run in ("a", "b"):
        write_spec(tmp_path / run / "specs", f"{run}0", trace, sleep=3.0)
        runs.append(start_run(tmp_path / run, tmp_path / f"run-{run}", env, "--fake-gpus", "1"))
    for proc in runs:
        output = proc.communicate(timeout=300)[0]
        assert proc.returncode == 0, output
    first, second = records(trace)
    assert first["devices"] == second["devices"] == "0"
    assert overlap(first, second)
    assert not (tmp_path / "leases").exists()


def test_specs_that_declare_memory_share_one_device_within_its_memory_less_headroom(harness, tmp_path: Path) -> None:
    project, trace = tmp_path / "project", tmp_path / "trace.jsonl"
    for i in range(8):
        write_spec(project / "specs", f"small{i}", trace, sleep=1.5, gpu_memory="5GiB")
    write_spec(project / "specs", "whole", trace, sleep=1.5)
    # On simulated devices the workers default to the cores (the specs here only sleep): ask for the packing's four.
    run = harness("run", "--fake-gpus", "1", "--fake-gpu-memory", "24GiB", "--workers", "4", cwd=project)
    assert run.code == 0, run.output
    done = records(trace)
    assert len(done) == 9 and all(r["devices"] == "0" for r in done)
    whole = next(r for r in done if r["name"] == "whole")
    smalls = [r for r in done if r["name"] != "whole"]
    assert not any(overlap(whole, r) for r in smalls), "the spec without gpu_memory shared its device"
    # At each start, the declared memory of everything running: 4 x 5 GiB = 20 GiB <= 24 GiB x 0.9.
    at_once = [sum(1 for other in smalls if other["start"] <= r["start"] < other["end"]) for r in smalls]
    assert max(at_once) <= 4
    assert max(at_once) * 5 <= 24 * 0.9
    assert max(at_once) >= 3, f"the specs did not share the device: {at_once}"
    assert {s["outcome"] for s in run.results["specs"]} == {"passed"}


def test_a_spec_declaring_more_than_any_device_holds_is_skipped_with_both_numbers(harness, tmp_path: Path) -> None:
    project = tmp_path / "project"
    write_spec(project / "specs", "huge", tmp_path / "trace.jsonl", sleep=0.1, gpu_memory="30GiB")
    write_spec(project / "specs", "fine", tmp_path / "trace.jsonl", sleep=0.1, gpu_memory="1GiB")
    run = harness("run", "--fake-gpus", "1", "--fake-gpu-memory", "24GiB", cwd=project)
    assert run.code == 0, run.output
    huge = run.spec("huge")
    assert huge["outcome"] == "skipped"
    assert "30GiB (30720 MiB)" in huge["reason"] and "22118 MiB" in huge["reason"]


def test_a_run_where_every_spec_is_skipped_for_devices_exits_5_unless_skips_are_allowed(
    harness, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    for name in ("gpu_a", "gpu_b"):
        write_spec(project / "specs", name, tmp_path / "trace.jsonl", sleep=0.1, cpu_ok=False)
    run = harness("run", "--fake-gpus", "1", cwd=project)
    assert run.code == 5, run.output
    assert "nothing ran: 2 specs skipped (needs 1 GPU and is not cpu_ok (fake devices) (x2))" in run.output
    assert "0 skipped" not in run.output and "none run, 2 skipped" in run.output
    assert harness("run", "--fake-gpus", "1", "--allow-skips", cwd=project).code == 0
    # Deselected by the user's own selection: nothing was skipped for devices, so that is 0.
    assert harness("run", "--fake-gpus", "1", "-k", "no_such_spec", cwd=project).code == 0
