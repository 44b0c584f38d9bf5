"""harness.devices.leases: a device pool shared by real, separate processes through one state file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from itertools import combinations
from pathlib import Path

import psutil
import pytest

from harness.atomic import KeptFileWarning
from harness.devices.holders import read_holders
from harness.devices.leases import LeaseError, LeasePool

from ..conftest import gone

WORKER = r"""
import json, sys, time
from pathlib import Path
from harness.devices.leases import LeasePool

job = json.loads(sys.argv[1])
pool = LeasePool(Path(job["state"]), tuple(job["devices"]), capacity={d: 22118 for d in job["devices"]})
lease = pool.acquire(job["k"], job["name"], job.get("priority", 0), job.get("expected", 0.0), job.get("memory"))
start = time.time()
Path(job["record"] + ".acquired").write_text(json.dumps(list(lease.devices)))
if job.get("until"):
    while not Path(job["until"]).exists():
        time.sleep(0.01)
else:
    time.sleep(job.get("hold", 0.0))
end = time.time()
lease.release()
record = {"name": job["name"], "devices": list(lease.devices), "start": start, "end": end}
Path(job["record"]).write_text(json.dumps(record))
"""


def wait_for(predicate, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


class Pool:
    """Starts worker processes on one state file and reads what they recorded."""

    def __init__(self, tmp_path: Path, devices: tuple[str, ...]):
        self.dir = tmp_path
        self.devices = devices
        self.state = tmp_path / "leases.json"
        self.script = tmp_path / "lease_worker.py"
        self.script.write_text(WORKER)
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self, name: str, k: int, **job) -> subprocess.Popen:
        job = {
            "state": str(self.state),
            "devices": list(self.devices),
            "k": k,
            "name": name,
            "record": str(self.dir / f"{name}.json"),
            **job,
        }
        proc = subprocess.Popen([sys.executable, str(self.script), json.dumps(job)])
        self.procs[name] = proc
        return proc

    def acquired(self, name: str) -> bool:
        return (self.dir / f"{name}.json.acquired").exists()

    def record(self, name: str) -> dict:
        return json.loads((self.dir / f"{name}.json").read_text())

    def queued(self) -> list[str]:
        try:
            return [w["name"] for w in json.loads(self.state.read_text())["queue"]]
        except (FileNotFoundError, json.JSONDecodeError):
            return []

    def finish(self, timeout: float = 20.0) -> None:
        for name, proc in self.procs.items():
            assert proc.wait(timeout=timeout) == 0, f"worker {name} failed"

    def kill_all(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture
def pool_dir(tmp_path):
    pools: list[Pool] = []

    def make(devices: tuple[str, ...]) -> Pool:
        pools.append(Pool(tmp_path, devices))
        return pools[-1]

    yield make
    for pool in pools:
        pool.kill_all()


def test_overlapping_holders_never_share_a_device(pool_dir):
    pool = pool_dir(("0", "1", "2"))
    sizes = [1, 2, 1, 3, 1, 2, 1, 1]
    for i, k in enumerate(sizes):
        pool.start(f"w{i}", k, hold=0.25)
    pool.finish()
    records = [pool.record(f"w{i}") for i in range(len(sizes))]
    for record, k in zip(records, sizes, strict=True):
        assert len(record["devices"]) == k
        assert len(set(record["devices"])) == k
        assert set(record["devices"]) <= {"0", "1", "2"}
    overlapping = 0
    for a, b in combinations(records, 2):
        if a["start"] < b["end"] and b["start"] < a["end"]:
            overlapping += 1
            assert not set(a["devices"]) & set(b["devices"]), (a, b)
    assert overlapping > 0, "no two runs held devices at the same time: the test proved nothing"
    assert LeasePool(pool.state, pool.devices).holders() == {}


def test_a_k_device_request_gets_k_distinct_devices(tmp_path):
    pool = LeasePool(tmp_path / "leases.json", ("a", "b", "c", "d"))
    first = pool.acquire(3, "three")
    assert len(first.devices) == 3 and len(set(first.devices)) == 3
    assert set(pool.holders()) == set(first.devices)
    assert all(h["name"] == "three" for held in pool.holders().values() for h in held)
    with pool.lease(1, "one") as second:
        assert second.devices == tuple(set(pool.devices) - set(first.devices))
    first.release()
    assert pool.holders() == {}
    with pytest.raises(ValueError, match="needs 5 devices; the pool has 4"):
        pool.acquire(5, "too-many")


def test_attach_ties_the_lease_to_the_runs_process_group(tmp_path):
    pool = LeasePool(tmp_path / "leases.json", ("0", "1"))
    lease = pool.acquire(2, "run")
    # A run's group of its own, as the harness starts every run (the test's own group leader may be gone).
    run = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        lease.attach(run.pid)
        [holder] = [h for held in pool.holders().values() for h in held][:1]
        assert holder["group"] == [run.pid, psutil.Process(run.pid).create_time()]
        assert json.loads((tmp_path / "leases.held" / f"{lease.token}.json").read_text())["group"] == holder["group"]
    finally:
        run.kill()
        run.wait()
    lease.release()
    assert pool.holders() == {} and list((tmp_path / "leases.held").iterdir()) == []


def test_a_holder_killed_with_sigkill_gives_its_devices_back(pool_dir):
    pool = pool_dir(("0", "1"))
    holder = pool.start("doomed", 2, hold=120)
    wait_for(lambda: pool.acquired("doomed"), what="the holder to acquire")
    view = LeasePool(pool.state, pool.devices)
    assert {h["name"] for held in view.holders().values() for h in held} == {"doomed"}
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert view.holders() == {}
    began = time.monotonic()
    lease = view.acquire(2, "next")
    assert sorted(lease.devices) == ["0", "1"]
    # Given back when its holder died, not when the holder's 120 s would have ended.
    assert time.monotonic() - began < 120
    lease.release()


def test_a_killed_holder_frees_its_devices_before_it_is_reaped(pool_dir):
    pool = pool_dir(("0",))
    holder = pool.start("zombie", 1, hold=120)
    wait_for(lambda: pool.acquired("zombie"), what="the holder to acquire")
    holder.send_signal(signal.SIGKILL)
    try:
        wait_for(lambda: psutil.Process(holder.pid).status() == psutil.STATUS_ZOMBIE, what="the holder to die")
        assert LeasePool(pool.state, pool.devices).holders() == {}
    finally:
        holder.wait()


def big_waits_behind_h(pool_dir, tmp_path: Path, h_expected: float, big_hold: float):
    """Two devices: `h` holds one until its release file appears, `big` (both devices) is queued behind it.
    Returns the pool and h's release file."""
    pool = pool_dir(("0", "1"))
    release = tmp_path / "release-h"
    pool.start("h", 1, until=str(release), expected=h_expected)
    wait_for(lambda: pool.acquired("h"), what="h to acquire")
    pool.start("big", 2, expected=1.0, hold=big_hold)
    wait_for(lambda: pool.queued() == ["big"], what="big to queue")
    return pool, release


def test_a_multi_device_waiter_is_not_starved_by_later_single_device_waiters(pool_dir, tmp_path):
    pool, release = big_waits_behind_h(pool_dir, tmp_path, h_expected=0.5, big_hold=0.1)
    for i in range(3):
        pool.start(f"small{i}", 1, expected=30.0, hold=0.1)
    wait_for(lambda: len(pool.queued()) == 4, what="the small waiters to queue")
    time.sleep(0.1)  # give the small waiters a few polls with one device free
    assert not any(pool.acquired(f"small{i}") for i in range(3)), "a 1-device waiter jumped the queue"
    release.write_text("")
    pool.finish()
    big = pool.record("big")
    smalls = [pool.record(f"small{i}") for i in range(3)]
    assert sorted(big["devices"]) == ["0", "1"]
    assert all(big["end"] <= s["start"] for s in smalls)
    assert pool.record("h")["end"] <= big["start"]


def test_a_short_waiter_may_backfill_a_free_device(pool_dir, tmp_path):
    pool, release = big_waits_behind_h(pool_dir, tmp_path, h_expected=60.0, big_hold=0.05)
    pool.start("quick", 1, expected=0.5, hold=0.05)
    # quick ends long before h is expected to free its device, so it does not delay big.
    wait_for(lambda: pool.acquired("quick"), what="quick to backfill")
    assert not pool.acquired("big")
    release.write_text("")
    pool.finish()
    assert pool.record("quick")["end"] <= pool.record("big")["start"]


def test_waiters_are_served_by_priority_then_arrival(pool_dir, tmp_path):
    pool = pool_dir(("0",))
    release = tmp_path / "release-h"
    pool.start("h", 1, until=str(release))
    wait_for(lambda: pool.acquired("h"), what="h to acquire")
    pool.start("late_in_plan", 1, priority=5, hold=0.05)
    wait_for(lambda: pool.queued() == ["late_in_plan"], what="the first waiter to queue")
    pool.start("early_in_plan_a", 1, priority=1, hold=0.05)
    wait_for(lambda: len(pool.queued()) == 2, what="the second waiter to queue")
    pool.start("early_in_plan_b", 1, priority=1, hold=0.05)
    wait_for(lambda: len(pool.queued()) == 3, what="the third waiter to queue")
    release.write_text("")
    pool.finish()
    order = sorted(["late_in_plan", "early_in_plan_a", "early_in_plan_b"], key=lambda n: pool.record(n)["start"])
    assert order == ["early_in_plan_a", "early_in_plan_b", "late_in_plan"]


def test_an_interrupted_acquire_leaves_no_waiter_behind(pool_dir, tmp_path):
    pool = pool_dir(("0",))
    release = tmp_path / "release-h"
    pool.start("h", 1, until=str(release))
    wait_for(lambda: pool.acquired("h"), what="h to acquire")

    def give_up(signum, frame):
        raise TimeoutError("gave up waiting")

    previous = signal.signal(signal.SIGALRM, give_up)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.15)
        with pytest.raises(TimeoutError):
            LeasePool(pool.state, pool.devices).acquire(1, "interrupted")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        release.write_text("")
        pool.finish()
    assert "interrupted" not in pool.queued()


def test_state_survives_a_corrupt_file(tmp_path):
    state = tmp_path / "leases.json"
    state.write_text("{not json")
    pool = LeasePool(state, ("0",))
    with (
        pytest.warns(KeptFileWarning, match="the device lease state is unreadable"),
        pool.lease(1, "after-corruption") as lease,
    ):
        assert lease.devices == ("0",)
        assert pool.holders()["0"][0]["owner"][0] == os.getpid()


@pytest.mark.parametrize(
    "content",
    [
        b"\x89PNG\r\n\x1a\n\x00\xff",
        b"{oops",
        b"[]",
        b'{"holders": 3}',
        b'{"holders": {}, "queue": [], "tickets": "x", "runs": {}, "capacity": {}}',
        b'{"holders": {}, "queue": [], "tickets": 0, "arrived": [], "opened": 0}',
    ],
    ids=[
        "binary",
        "cut-short",
        "a-list",
        "holders-not-a-map",
        "bad-counter",
        "an-older-format",
    ],
)
def test_a_garbage_lease_state_reads_as_a_fresh_pool_with_one_warning(tmp_path, content):
    state = tmp_path / "leases.json"
    state.write_bytes(content)
    pool = LeasePool(state, ("0", "1"))
    with pytest.warns(KeptFileWarning, match="device lease state is unreadable") as caught:
        assert pool.holders() == {}
    assert len(caught) >= 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KeptFileWarning)
        lease = pool.acquire(2, "after-garbage")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the first write replaced the garbage
        assert set(pool.holders()) == {"0", "1"}
        lease.release()
        assert json.loads(state.read_text())["holders"] == {}


def test_declared_runs_share_a_device_while_their_memory_fits(tmp_path):
    pool = LeasePool(tmp_path / "leases.json", ("0",), capacity={"0": 22118})
    held = [pool.acquire(1, f"small{i}", memory=5120) for i in range(4)]
    assert [lease.devices for lease in held] == [("0",)] * 4
    state = pool.snapshot()
    assert sum(h["memory"] for h in state["holders"].values()) == 20480
    with pytest.raises(ValueError, match="declares 30720 MiB per device; the devices have at most 22118 MiB"):
        pool.acquire(1, "huge", memory=30720)
    for lease in held:
        lease.release()


def test_a_fifth_declared_run_and_a_whole_device_run_wait_for_room(pool_dir, tmp_path):
    pool = pool_dir(("0",))
    release = tmp_path / "release"
    for i in range(4):
        pool.start(f"small{i}", 1, until=str(release), memory=5120)
    wait_for(lambda: all(pool.acquired(f"small{i}") for i in range(4)), what="four declared runs to share the device")
    pool.start("fifth", 1, memory=5120, hold=0.05)
    pool.start("whole", 1, hold=0.05)
    wait_for(lambda: len(pool.queued()) == 2, what="the fifth and the whole-device run to queue")
    time.sleep(0.1)
    assert not pool.acquired("fifth") and not pool.acquired("whole")
    release.write_text("")
    pool.finish()
    whole, fifth = pool.record("whole"), pool.record("fifth")
    assert whole["start"] >= max(pool.record(f"small{i}")["end"] for i in range(4))
    assert fifth["end"] <= whole["start"] or whole["end"] <= fifth["start"]


def test_runs_naming_one_device_differently_share_one_pool_by_its_identity(tmp_path):
    uuid = "GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77"
    by_index = LeasePool(tmp_path / "leases.json", ("0",), keys={"0": uuid}, run="a")
    by_uuid = LeasePool(tmp_path / "leases.json", (uuid,), keys={uuid: uuid}, run="b")
    held = by_index.acquire(1, "first")
    assert by_uuid.others() == [f"first on {uuid} (pid {os.getpid()})"]
    assert by_index.others() == []
    assert list(by_uuid.holders()) == [uuid]
    held.release()
    assert by_uuid.others() == []


def test_a_retry_that_avoids_its_devices_gets_others_when_free_and_its_own_rather_than_wait(tmp_path: Path):
    """After the machine failed a run on device 0, its retry takes 1 when 1 is free, and 0 when only 0 is."""
    pool = LeasePool(tmp_path / "leases.json", ("0", "1"))
    with pool.lease(1, "first") as first:
        assert first.devices == ("0",)
    retry = pool.acquire(1, "retry", avoid=("0",))
    assert retry.devices == ("1",)
    retry.release()
    with pool.lease(1, "other", memory=None) as other:
        assert other.devices == ("0",)
        retry = pool.acquire(1, "retry", avoid=("1",))
        assert retry.devices == ("1",)  # the avoided device, free, rather than waiting for the other
        retry.release()
    shared = LeasePool(tmp_path / "shared.json", ("0", "1"), capacity={"0": 1000, "1": 1000})
    declared = shared.acquire(1, "declared", memory=500, avoid=("0",))
    assert declared.devices == ("1",)
    declared.release()


@pytest.mark.parametrize("damage", ["deleted", "garbage", "holders-emptied"])
def test_a_lost_or_garbled_state_file_never_hands_out_a_held_device(tmp_path, damage):
    """The holders' own files are the truth: what the state file says (or does not) changes nothing."""
    state = tmp_path / "leases.json"
    pool = LeasePool(state, ("0",))
    held = pool.acquire(1, "holder")
    if damage == "deleted":
        state.unlink()
    elif damage == "garbage":
        state.write_bytes(b"\x00garbage")
    else:
        state.write_text(json.dumps({**json.loads(state.read_text()), "holders": {}}))
    other = LeasePool(state, ("0",))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KeptFileWarning)
        assert other.holders()["0"][0]["name"] == "holder"
    workers = Pool(tmp_path, ("0",))
    workers.start("waiter", 1)
    try:
        time.sleep(1.5)
        assert not workers.acquired("waiter"), "the waiter got a device that is held"
        held.release()
        workers.finish()
    finally:
        workers.kill_all()
    assert workers.record("waiter")["devices"] == ["0"]


def test_a_lease_outlives_its_owner_while_its_runs_group_lives(tmp_path):
    """A harness killed with SIGKILL leaves a run that ignores SIGTERM: its device stays held until the run ends."""
    state = tmp_path / "leases.json"
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER_OF_A_RUN, str(state)],
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        stdout=subprocess.PIPE,
        text=True,
    )
    run_pid = int(owner.stdout.readline())
    owner.kill()
    owner.wait()
    pool = LeasePool(state, ("0",))
    try:
        assert pool.holders()["0"][0]["name"] == "run"
    finally:
        os.killpg(run_pid, signal.SIGKILL)
    wait_for(lambda: gone(run_pid) and pool.holders() == {}, what="the lease to end with its run")


# Leases device 0, starts a run in a group of its own (as the harness does) and ties the lease to it.
OWNER_OF_A_RUN = """
import subprocess, sys, time
from harness.devices.leases import LeasePool
lease = LeasePool(sys.argv[1], ("0",)).acquire(1, "run")
run = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
lease.attach(run.pid)
print(run.pid, flush=True)
time.sleep(120)
"""


def test_a_state_file_that_cannot_be_replaced_costs_a_warning_on_release_and_an_error_on_acquire(tmp_path):
    """A folder in place of the state file (as an immutable file does, it refuses the rename): the device
    is still given back through its holder's file; a new lease is one clear error, never a raw OSError."""
    state = tmp_path / "leases.json"
    pool = LeasePool(state, ("0",))
    lease = pool.acquire(1, "holder")
    state.unlink()
    state.mkdir()
    with pytest.warns(KeptFileWarning, match="cannot write the device lease state .*given back through its own file"):
        lease.release()
    assert read_holders(tmp_path / "leases.held") == {}
    with pytest.raises(LeaseError, match=r"leases.json: cannot write the device lease state \(Is a directory\)"):
        pool.acquire(1, "next")


def test_a_lease_folder_that_is_a_file_or_not_writable_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    assert LeasePool(tmp_path / "file" / "devices.json", ("0",)).problem() == (
        f"the device lease folder {tmp_path / 'file'} is a file; "
        "point TRAINSPEC_LEASE_DIR at a folder every run on this machine can write"
    )
    assert (
        LeasePool(Path("/proc/trainspec/devices.json"), ("0",))
        .problem()
        .startswith("the device lease folder /proc/trainspec is not writable: ")
    )
    assert LeasePool(tmp_path / "new" / "devices.json", ("0",)).problem() is None


def test_a_later_ask_of_a_run_past_its_first_wave_is_not_held_back_for_a_new_grace(tmp_path: Path, monkeypatch) -> None:
    """The first-wave entry of a run stays for the run's life: once dropped, the next ask opened it
    again and waited a whole grace for priorities that had long run (3 s between specs on a device)."""
    import harness.devices.leases as leases

    pool = LeasePool(tmp_path / "leases.json", ("0", "1"), first_wave=2, run="r")
    pool.acquire(1, "first", priority=0).release()
    opened = time.time() - leases.FIRST_WAVE_GRACE * 3  # the run began long ago
    pool._update(lambda state: state["runs"]["r"].__setitem__("opened", opened))
    began = time.monotonic()
    pool.acquire(1, "later", priority=5).release()
    # Not waiting for priority 1 to arrive: a new grace would take FIRST_WAVE_GRACE seconds.
    assert time.monotonic() - began < leases.FIRST_WAVE_GRACE
    assert pool._read()["runs"]["r"]["opened"] == opened
