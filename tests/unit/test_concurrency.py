"""How many runs go at once on this machine, and how many threads each process of a run gets."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from harness.backends.local import SIMULATED_CEILING, LocalBackend, concurrency, cpu_threads, usable_cores
from harness.devices.visible import discover
from harness.planning.concurrency import describe_concurrency, worker_count
from harness.planning.plan import make_plan
from harness.spec.files import spec_from_mapping


def spec(gpus: int, launcher: str = "none"):
    return spec_from_mapping(
        {"id": "s", "command": ["x"], "gpus": gpus, "cpu_ok": True, "launcher": launcher}, Path("s.yaml")
    )


@settings(deadline=None, max_examples=50)  # a fake inventory of 10^5 devices takes a moment to build
@given(devices=st.integers(1, 10**5), specs=st.integers(0, 10**4))
def test_simulated_devices_run_what_the_plan_places_up_to_the_ceiling_not_the_cores(devices: int, specs: int) -> None:
    at_once = min(devices, specs)  # what a plan of exclusive specs places together
    runs = concurrency(at_once, discover(fake_gpus=devices, environ={}))
    assert runs == max(1, min(at_once, SIMULATED_CEILING))
    workers = LocalBackend().workers(at_once, discover(fake_gpus=devices, environ={}))
    assert workers == (runs if runs > 1 else 0)


@given(devices=st.integers(1, 64), held=st.integers(1, 64))
def test_a_runs_processes_together_take_no_more_than_its_share_of_the_cores(devices: int, held: int) -> None:
    held = min(held, devices)
    inventory = discover(fake_gpus=devices, environ={})
    share = max(1, usable_cores() * held // devices)
    per_rank = cpu_threads(held, inventory, processes=held)
    assert per_rank >= 1
    assert per_rank * held <= max(share, held)  # at least one thread each, else within the share


def test_torchrun_ranks_split_their_runs_threads() -> None:
    cores = usable_cores()
    two = discover(fake_gpus=2, environ={})
    one_process = LocalBackend().place(spec(2), ("0", "1"), two).env["OMP_NUM_THREADS"]
    ranks = LocalBackend().place(spec(2, launcher="torchrun"), ("0", "1"), two).env["OMP_NUM_THREADS"]
    assert int(one_process) == cores
    assert int(ranks) == max(1, cores // 2)


def test_given_workers_are_capped_at_the_specs_and_the_plan_says_when_the_ceiling_binds() -> None:
    backend, inventory = LocalBackend(), discover(fake_gpus=100_000, environ={})
    assert worker_count(64, backend, inventory, 3, 3) == 3
    assert worker_count(0, backend, inventory, 3, 3) == 0
    assert worker_count(None, backend, inventory, 100_000, 10**6) == SIMULATED_CEILING
    specs = [
        spec_from_mapping({"id": f"s{i}", "command": ["x"], "gpus": 1, "cpu_ok": True}, Path("s.yaml"))
        for i in range(100)
    ]
    plan = make_plan(
        specs, inventory, {}, workers=lambda at_once, runs: worker_count(None, backend, inventory, at_once, runs)
    )
    assert plan.workers == SIMULATED_CEILING and plan.at_once == 100_000
    said = describe_concurrency(plan)
    assert said.startswith(f"100000 devices, {SIMULATED_CEILING} workers: the ceiling of {SIMULATED_CEILING}")
    assert f"({usable_cores()} cores" in said
    few = make_plan(
        specs[:3], inventory, {}, workers=lambda at_once, runs: worker_count(2, backend, inventory, at_once, runs)
    )
    assert few.workers == 2 and describe_concurrency(few, 2).startswith("100000 devices, 2 workers: --workers 2")


def test_the_plan_simulates_the_workers_the_run_starts() -> None:
    inventory = discover(fake_gpus=4, environ={})
    specs = [
        spec_from_mapping({"id": f"s{i}", "command": ["x"], "gpus": 1, "cpu_ok": True}, Path("s.yaml"))
        for i in range(8)
    ]
    durations = {s.id: 10.0 for s in specs}
    assert make_plan(specs, inventory, durations).simulated == 20.0
    two = make_plan(specs, inventory, durations, workers=lambda at_once, runs: 2)
    assert two.workers == 2 and two.simulated == 40.0 and two.lower_bound == 40.0
    none = make_plan(specs, inventory, durations, workers=lambda at_once, runs: 0)
    assert none.workers == 0 and none.simulated == 80.0
