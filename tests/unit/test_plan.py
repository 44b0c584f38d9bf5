"""harness.planning.plan: tiers, run order, skip reasons, the makespan lower bound and recorded durations."""

from __future__ import annotations

import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.atomic import KeptFileWarning
from harness.caches import DurationCache, cache_root, default_run_dir
from harness.devices.visible import DeviceFacts, Inventory, discover
from harness.planning.plan import make_plan, simulate
from harness.spec.files import in_tier, load_specs, spec_from_mapping
from harness.spec.typed_yaml import SpecError


def spec(spec_id: str, **fields):
    return spec_from_mapping({"id": spec_id, "command": ["x"], **fields}, Path(f"{spec_id}.yaml"))


SMOKE = spec("s", markers=["smoke"])
STANDARD = spec("m")
FULL = spec("f", markers=["slow"])
FULL_BY_TIER = spec("t", tier="full")


@pytest.mark.parametrize(
    ("tier", "ids"),
    [
        ("smoke", ["s"]),
        ("standard", ["s", "m"]),
        ("full", ["s", "m", "f", "t"]),
        (None, ["s", "m", "f", "t"]),
    ],
)
def test_in_tier(tier, ids):
    assert [s.id for s in (SMOKE, STANDARD, FULL, FULL_BY_TIER) if in_tier(s, tier)] == ids


def test_a_spec_is_never_listed_under_a_tier_it_does_not_run_in():
    # `tier: standard` with a `slow` marker: refused at load, or else it must run in its tier.
    try:
        contradictory = spec("c", tier="standard", markers=["slow"])
    except SpecError as error:
        assert error.field == "tier"
    else:
        assert in_tier(contradictory, contradictory.effective_tier)
    for agreeing in (spec("f2", tier="full", markers=["slow"]), spec("s2", tier="smoke", markers=["smoke"])):
        assert in_tier(agreeing, agreeing.effective_tier)


def test_make_plan_orders_longest_expected_first_with_timeout_fallback():
    specs = [
        spec("a", cpu_ok=True, timeout=100),
        spec("b", cpu_ok=True, timeout=100),
        spec("c", cpu_ok=True, timeout=50),
        spec("d", cpu_ok=True, timeout=400),
        spec("e", cpu_ok=True, timeout=70),
    ]
    durations = {"a": 20.0, "b": 300.0, "d": 5.0, "unrelated": 1000.0}
    plan = make_plan(specs, discover(fake_gpus=2, environ={}), durations)
    assert [(p.spec.id, p.expected, p.recorded) for p in plan.runs] == [
        ("b", 300.0, True),
        ("e", 70.0, False),
        ("c", 50.0, False),
        ("a", 20.0, True),
        ("d", 5.0, True),
    ]
    assert [p.priority for p in plan.runs] == [0, 1, 2, 3, 4]
    assert plan.skipped == []


def test_equal_expectations_are_ordered_by_id():
    specs = [spec(name, cpu_ok=True, timeout=10) for name in ["zeta", "alpha", "mid"]]
    plan = make_plan(specs, discover(fake_gpus=1, environ={}), {})
    assert [p.spec.id for p in plan.runs] == ["alpha", "mid", "zeta"]


def test_skipped_specs_carry_their_reason():
    specs = [
        spec("gpu-only"),
        spec("too-wide", cpu_ok=True, gpus=3),
        spec("fits", cpu_ok=True, gpus=2),
        spec("slow-one", cpu_ok=True, markers=["slow"]),
    ]
    plan = make_plan(specs, discover(fake_gpus=2, environ={}), {}, tier="standard")
    assert [p.spec.id for p in plan.runs] == ["fits"]
    assert {p.spec.id: p.skip for p in plan.skipped} == {
        "gpu-only": "needs 1 GPU and is not cpu_ok (fake devices)",
        "too-wide": "needs 3 devices, this run has 2 (2 fake devices [0, 1] from --fake-gpus 2)",
    }
    # a spec outside the tier is neither run nor reported as skipped
    assert "slow-one" not in [p.spec.id for p in plan.runs + plan.skipped]


def test_lower_bound_is_the_device_seconds_spread_over_the_devices():
    specs = [
        spec("wide", cpu_ok=True, gpus=2),
        spec("one", cpu_ok=True, gpus=1),
        spec("cpu", cpu_ok=True, gpus=0),
        spec("long", cpu_ok=True, gpus=1),
    ]
    durations = {"wide": 10.0, "one": 4.0, "cpu": 6.0, "long": 12.0}
    plan = make_plan(specs, discover(fake_gpus=2, environ={}), durations)
    assert plan.workers == 2
    # max(device-seconds (2*10 + 4 + 12) / 2 = 18, seconds over 2 workers (10 + 4 + 6 + 12) / 2 = 16,
    # wide holds both devices whole so long cannot run beside it: 10 + 12 = 22)
    assert plan.lower_bound == pytest.approx(22.0)
    assert plan.simulated == pytest.approx(22.0)


def test_the_bound_after_a_run_is_over_the_lengths_the_runs_took_not_their_timeouts():
    specs = [spec(f"s{i}", cpu_ok=True, gpus=1, timeout=60) for i in range(4)] + [spec("never", cpu_ok=True, gpus=1)]
    plan = make_plan(specs, discover(fake_gpus=2, environ={}), {})
    assert plan.lower_bound >= 120.0  # no length recorded: the plan goes by the timeouts
    # s0-s3 took 1, 2, 3 and 4 s, "never" did not run: 10 device-seconds over 2 devices
    assert plan.lower_bound_over({"s0": 1.0, "s1": 2.0, "s2": 3.0, "s3": 4.0}) == pytest.approx(5.0)
    assert plan.lower_bound_over({}) == 0.0


def test_lower_bound_is_the_longest_run_when_that_is_larger():
    plan = make_plan([spec("only", cpu_ok=True)], discover(fake_gpus=4, environ={}), {"only": 50.0})
    assert plan.lower_bound == pytest.approx(50.0)


def test_an_empty_plan():
    plan = make_plan([spec("gpu-only")], discover(gpus=0, environ={}), {})
    assert plan.runs == [] and plan.lower_bound == 0.0
    assert plan.workers == 1
    assert len(plan.skipped) == 1


def test_duration_cache_round_trip_and_merge(tmp_path):
    cache = DurationCache(tmp_path / "nested" / "durations.json")
    assert cache.load() == {}
    cache.record({})
    assert not cache.path.exists()
    cache.record({"a": 1.5, "b": 2})
    assert cache.load() == {"a": 1.5, "b": 2.0}
    cache.record({"b": 7.25, "c": 3.0})
    assert cache.load() == {"a": 1.5, "b": 7.25, "c": 3.0}
    assert DurationCache(cache.path).load() == cache.load()


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{oops", "JSONDecodeError"),
        (b"\x89PNG\r\n\x1a\n" + bytes(range(256)), "UnicodeDecodeError"),
        (b"[1, 2]", "a JSON list, not a JSON object"),
        (b"[" * 100_000, "RecursionError"),
        (b"", "JSONDecodeError"),
    ],
    ids=["cut-short", "binary", "a-list", "deeply-nested", "empty"],
)
def test_an_unreadable_duration_cache_is_ignored_with_one_warning_and_rewritten(tmp_path, content, problem):
    path = tmp_path / "durations.json"
    path.write_bytes(content)
    with pytest.warns(KeptFileWarning) as caught:
        assert DurationCache(path).load() == {}
    assert len(caught) == 1
    assert str(caught[0].message).startswith(f"{path}: the duration cache is unreadable ({problem}")
    assert str(caught[0].message).endswith("; ignored, and replaced when next saved")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DurationCache(path).record({"d": 1.0})
        assert DurationCache(path).load() == {"d": 1.0}


def test_duration_cache_keeps_only_finite_durations(tmp_path):
    path = tmp_path / "durations.json"
    path.write_text('{"a": "fast", "b": 2.0, "c": null, "d": NaN, "e": Infinity, "f": -1, "g": true, "h": 3}')
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert DurationCache(path).load() == {"b": 2.0, "h": 3.0}


def test_a_folder_in_place_of_the_duration_cache_never_fails(tmp_path):
    path = tmp_path / "durations.json"
    (path / "inside").mkdir(parents=True)
    with pytest.warns(KeptFileWarning, match="the duration cache is unreadable"):
        assert DurationCache(path).load() == {}
    with pytest.warns(KeptFileWarning) as caught:
        DurationCache(path).record({"d": 1.0})
    assert [str(w.message).split(" (")[0] for w in caught] == [f"{path}: durations not saved"]
    assert "IsADirectoryError" in str(caught[0].message)
    assert (path / "inside").is_dir()  # a folder is never removed, only warned about
    blocked = tmp_path / "a-file"
    blocked.write_text("x")
    with pytest.warns(KeptFileWarning, match="durations not saved"):
        DurationCache(blocked / "durations.json").record({"d": 1.0})


def test_duration_cache_merges_records_from_concurrent_processes(tmp_path):
    path = tmp_path / "durations.json"
    code = (
        "import sys; from pathlib import Path; from harness.caches import DurationCache\n"
        "cache = DurationCache(Path(sys.argv[1]))\n"
        "for i in range(25):\n"
        "    cache.record({f'{sys.argv[2]}{i}': float(i)})\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(path), prefix]) for prefix in ("x", "y")]
    assert [p.wait(timeout=30) for p in procs] == [0, 0]
    assert DurationCache(path).load() == {f"{p}{i}": float(i) for p in ("x", "y") for i in range(25)}


def test_cache_root_honours_trainspec_cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINSPEC_CACHE_DIR", str(tmp_path / "mine"))
    assert cache_root(tmp_path / "repo") == tmp_path / "mine"
    assert default_run_dir(tmp_path / "repo").parent == tmp_path / "mine" / "runs"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRAINSPEC_CACHE_DIR", "relative")
    assert cache_root(tmp_path / "repo") == tmp_path / "relative"  # the same folder from any worker's cwd


def test_cache_root_ignores_a_relative_xdg_cache_home_and_a_missing_home(tmp_path, monkeypatch):
    monkeypatch.delenv("TRAINSPEC_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root(tmp_path / "repo").parent == tmp_path / "home" / ".cache" / "trainspec"
    monkeypatch.delenv("HOME")
    monkeypatch.setattr(
        Path,
        "home",
        classmethod(lambda cls: (_ for _ in ()).throw(RuntimeError("Could not determine home directory."))),
    )
    assert cache_root(tmp_path / "repo").parent.parent.parent == Path(tempfile.gettempdir())


def test_cache_root_without_it_is_one_folder_per_repository_outside_it(tmp_path, monkeypatch):
    monkeypatch.delenv("TRAINSPEC_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    first, second = tmp_path / "work" / "repo", tmp_path / "other" / "repo"
    first.mkdir(parents=True)
    second.mkdir(parents=True)
    root = cache_root(first)
    assert root.parent == tmp_path / "xdg" / "trainspec"
    assert root.name.startswith("repo-")
    assert cache_root(second) != root
    assert cache_root(first) == root
    assert first not in root.parents


def test_a_thousand_specs_load_and_plan(tmp_path):
    """How fast is benchmarks/bench_scheduling.py's to say (plan_1000_s)."""
    folder = tmp_path / "specs"
    folder.mkdir()
    for i in range(1000):
        (folder / f"s{i:04}.yaml").write_text(
            f"id: s{i}\ncommand: ['{{python}}', 'train.py', '--out', '{{output_dir}}']\ncpu_ok: true\ngpus: "
            f"{i % 3}\ntimeout: {60 + i}\nloss: {{final_max: 3}}\n"
        )
    specs, errors = load_specs([folder])
    plan = make_plan(specs, discover(fake_gpus=4, environ={}), {})
    assert errors == [] and len(plan.runs) == 1000


def test_declared_specs_are_planned_side_by_side_on_one_device():
    inventory = discover(fake_gpus=1, fake_gpu_memory=24 * 1024)
    specs = [spec(f"small{i}", gpu_memory="5GiB", cpu_ok=True) for i in range(8)] + [spec("whole", cpu_ok=True)]
    durations = {s.id: 1.5 for s in specs}
    plan = make_plan(specs, inventory, durations)
    assert plan.workers == 4
    assert {p.memory for p in plan.runs} == {5120, None}
    starts = sorted(p.start for p in plan.runs if p.memory)
    assert starts.count(starts[0]) == 4, "four 5 GiB specs fit 24 GiB less 10%"
    # 8 x 1.5 s at a quarter of the device each, plus 1.5 s alone: 4.5 s.
    assert plan.simulated == pytest.approx(4.5)
    # The whole one overlaps nothing; the others' 12 s over 4 workers exceed their device-memory-seconds.
    assert 8 * 1.5 * 5120 / int(24 * 1024 * 0.9) < 8 * 1.5 / 4
    assert plan.lower_bound == pytest.approx(1.5 + 8 * 1.5 / 4)


def test_auto_memory_packs_by_the_recorded_peak_plus_headroom_and_holds_whole_without_one():
    inventory = discover(fake_gpus=1, fake_gpu_memory=24 * 1024)
    specs = [spec("seen", gpu_memory="auto", cpu_ok=True), spec("new", gpu_memory="auto", cpu_ok=True)]
    plan = make_plan(specs, inventory, {}, peaks={"seen": 1000.0}, headroom=0.2)
    assert {p.spec.id: p.memory for p in plan.runs} == {"seen": 1200, "new": None}


def test_a_declared_spec_larger_than_every_device_is_skipped():
    inventory = discover(fake_gpus=2, fake_gpu_memory=8 * 1024)
    plan = make_plan([spec("big", gpu_memory="8GiB", cpu_ok=True)], inventory, {})
    assert plan.runs == []
    assert "8GiB (8192 MiB) per device on 1; the devices have at most 7372 MiB" in plan.skipped[0].skip


def test_runs_that_can_overlap_nothing_add_up_in_the_lower_bound():
    """A spec holding every device whole overlaps nothing; one holding a device whole cannot run
    beside one that needs memory on every device: both follow one another in any schedule."""
    inventory = discover(fake_gpus=4, fake_gpu_memory=80 * 1024)
    specs = [
        spec("machine", cpu_ok=True, gpus=4),
        spec("everywhere", cpu_ok=True, gpus=4, gpu_memory="2GiB"),
        spec("whole", cpu_ok=True, gpus=1),
        spec("small", cpu_ok=True, gpus=1, gpu_memory="2GiB"),
    ]
    durations = {"machine": 16.0, "everywhere": 120.0, "whole": 120.0, "small": 30.0}
    plan = make_plan(specs, inventory, durations)
    assert plan.lower_bound == pytest.approx(16.0 + 120.0 + 120.0)
    assert plan.simulated == pytest.approx(plan.lower_bound)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([0, 1, 2, 4]), st.sampled_from([None, "2GiB", "20GiB", "40GiB", "70GiB"]), st.floats(1, 100)
        ),
        min_size=1,
        max_size=14,
    )
)
def test_no_simulated_order_beats_the_lower_bound(jobs):
    inventory = discover(fake_gpus=4, fake_gpu_memory=80 * 1024)
    specs = [
        spec(f"j{i}", cpu_ok=True, gpus=k, **({"gpu_memory": m} if m and k else {})) for i, (k, m, _) in enumerate(jobs)
    ]
    durations = {f"j{i}": seconds for i, (_, _, seconds) in enumerate(jobs)}
    plan = make_plan(specs, inventory, durations)
    for order in (plan.runs, plan.runs[::-1]):
        schedule = simulate([(p.devices, p.expected, p.memory) for p in order], plan.capacity, plan.workers)
        assert schedule.makespan >= plan.lower_bound - 1e-6


def test_a_busy_device_is_handed_out_only_within_its_free_memory():
    """Another user's job holds 30 GiB of GPU 1: its room is its memory less the headroom less that."""
    facts = (
        DeviceFacts("0", "GPU-a", memory_total=81559, memory_used=0),
        DeviceFacts("1", "GPU-b", memory_total=81559, memory_used=30720),
    )
    inventory = Inventory(("0", "1"), "cuda", "nvidia-smi", facts)
    specs = [spec(f"mid{i}", gpu_memory="30GiB") for i in range(4)] + [spec("big", gpu_memory="45GiB")]
    plan = make_plan(specs, inventory, {s.id: 10.0 for s in specs})
    assert plan.capacity == {"0": int(81559 * 0.9), "1": int(81559 * 0.9) - 30720}
    assert next(p for p in plan.runs if p.spec.id == "big").placed == ("0",), "45 GiB fits only the idle GPU"
    for run in plan.runs:
        beside = [p for p in plan.runs if p.placed == run.placed and p.start <= run.start < p.start + p.expected]
        assert sum(p.memory or 0 for p in beside) <= plan.capacity[run.placed[0]]
    on_busy = [p.start for p in plan.runs if p.placed == ("1",)]
    assert len(on_busy) == len(set(on_busy)) >= 1, "the busy GPU takes one 30 GiB run at a time"
