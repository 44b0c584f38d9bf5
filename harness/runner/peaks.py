"""Peak GPU memory of a run's processes, sampled while it runs (real NVIDIA GPUs only).

About once a second a thread asks which processes use which GPU, and how much: NVML through
`nvidia-ml-py` when it is installed, else `nvidia-smi --query-compute-apps`. It keeps the
entries of the run's process tree (the leader and every descendant seen so far, so a rank
that leaves the tree is still counted) on the run's own devices, and the largest sum per
device. A sample that fails (nvidia-smi hiccups, hangs, prints garbage) is skipped:
measuring never fails a run. On fake devices, the CPU, or devices without a UUID to match
nothing is started at all.
"""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from harness.checks.after_run import CheckResult
from harness.devices.vendor_tools import run_tool
from harness.devices.visible import Inventory
from harness.process import descendants
from harness.records import SpecResult

APPS_QUERY = ["nvidia-smi", "--query-compute-apps=gpu_uuid,pid,used_memory", "--format=csv,noheader,nounits"]
INTERVAL_SECONDS = 1.0
SAMPLE_TIMEOUT_SECONDS = 10
# How long stopping waits for a sample in flight; a hung one is left to its own timeout.
JOIN_SECONDS = 2.0
MIB = 1 << 20

# (GPU UUID, pid, MiB) for each process using a GPU; None: this sample failed.
Usage = list[tuple[str, int, int]]
Query = Callable[[], Usage | None]


def smi_usage() -> Usage | None:
    """What `nvidia-smi --query-compute-apps` lists; None when it fails or does not answer."""
    try:
        done = run_tool(APPS_QUERY, timeout=SAMPLE_TIMEOUT_SECONDS)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        return None
    rows = []
    # Garbage bytes make lines that are not rows, skipped below like any other garbage.
    for line in done.stdout.decode(errors="replace").splitlines():
        cells = [cell.strip() for cell in line.split(",")]
        # `[N/A]` memory (a MIG instance, a driver without per-process accounting) says nothing.
        if len(cells) == 3 and cells[1].isdigit() and cells[2].isdigit():
            rows.append((cells[0], int(cells[1]), int(cells[2])))
    return rows


class NvmlUsage:
    """The same table from NVML, without a subprocess per sample; `close` shuts NVML down."""

    def __init__(self, nvml: Any, uuids: Iterable[str]):
        self.nvml = nvml
        nvml.nvmlInit()
        try:
            self.handles = {uuid: nvml.nvmlDeviceGetHandleByUUID(uuid) for uuid in uuids}
        except nvml.NVMLError:
            nvml.nvmlShutdown()
            raise

    def __call__(self) -> Usage | None:
        rows = []
        try:
            for uuid, handle in self.handles.items():
                for process in self.nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                    if process.usedGpuMemory is not None:
                        rows.append((uuid, int(process.pid), int(process.usedGpuMemory) // MIB))
        except self.nvml.NVMLError:
            return None
        return rows

    def close(self) -> None:
        try:
            self.nvml.nvmlShutdown()
        except self.nvml.NVMLError:
            pass


def usage_query(uuids: Sequence[str]) -> Query:
    """NVML when `nvidia-ml-py` is importable and starts, else nvidia-smi."""
    try:
        import pynvml  # nvidia-ml-py is optional, not a dependency
    except ImportError:
        return smi_usage
    try:
        return NvmlUsage(pynvml, uuids)
    except pynvml.NVMLError:
        return smi_usage


class PeakSampler:
    """Samples the run's process tree on `devices` (GPU UUID -> device name) from `on_start` until `stop`."""

    def __init__(
        self,
        devices: Mapping[str, str],
        forward: Callable[[int], None] | None = None,
        query: Callable[[Sequence[str]], Query] = usage_query,
        interval: float = INTERVAL_SECONDS,
    ):
        self.devices = {uuid.lower(): name for uuid, name in devices.items()}
        self.forward = forward
        self.make_query = query
        self.interval = interval
        self.peaks: dict[str, int] = {}
        self.seen: set[int] = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None
        self._leader: int | None = None

    def on_start(self, pid: int) -> None:
        """The run's leader started: pass it on, and start sampling if there is anything to measure."""
        if self.forward is not None:
            self.forward(pid)
        if self.devices:
            # Each stage of a spec starts its own leader: sampling follows the newest, in one thread.
            self._leader = pid
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name=f"peak-memory-{pid}", daemon=True)
                self._thread.start()

    def _loop(self) -> None:
        query = self.make_query(list(self.devices))
        try:
            while not self._stopped.wait(self.interval):
                self.sample(query)
        finally:
            close = getattr(query, "close", None)
            if close is not None:
                close()

    def sample(self, query: Query) -> None:
        """One sample: the tree's memory on each of the run's devices, kept where it is a new peak."""
        if self._leader is None:
            return
        self.seen.update([self._leader, *(p.pid for p in descendants(self._leader))])
        rows = query()
        if rows is None:
            return
        now: dict[str, int] = {}
        for uuid, pid, mib in rows:
            device = self.devices.get(uuid.lower())
            if device is not None and pid in self.seen:
                now[device] = now.get(device, 0) + mib
        with self._lock:
            if self._stopped.is_set():
                return  # a sample that outlived `stop` changes nothing already reported
            for device, mib in now.items():
                self.peaks[device] = max(mib, self.peaks.get(device, 0))

    def stop(self) -> dict[str, int]:
        """The peaks found, MiB by device name (empty when nothing was measured)."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=JOIN_SECONDS)
        with self._lock:
            return dict(self.peaks)


def run_devices(inventory: Inventory, devices: Sequence[str]) -> dict[str, str]:
    """The run's devices that can be measured, GPU UUID -> device name: NVIDIA GPUs whose UUID is known."""
    if inventory.kind != "cuda":
        return {}
    found = {}
    for device in devices:
        fact = inventory.fact(device)
        if fact is not None and fact.uuid and fact.uuid.startswith("GPU-"):
            found[fact.uuid] = device
    return found


@contextmanager
def sampling(
    inventory: Inventory, devices: Sequence[str], forward: Callable[[int], None] | None = None
) -> Iterator[PeakSampler]:
    """A sampler for one run: hand its `on_start` to the backend; its `peaks` are final once the block ends."""
    sampler = PeakSampler(run_devices(inventory, devices), forward)
    try:
        yield sampler
    finally:
        sampler.stop()


def memory_check(peaks: Mapping[str, int], declared: int | None, spec_value: str | None) -> list[CheckResult]:
    """A warning when the run used more on a device than it declared (a neighbour may run out of memory)."""
    if declared is None or not peaks:
        return []
    busiest = max(peaks, key=lambda device: peaks[device])
    expected = f"at most {declared} MiB per device (gpu_memory: {spec_value})"
    over = {device: mib for device, mib in peaks.items() if mib > declared}
    found = ", ".join(f"{mib} MiB on device {device}" for device, mib in (over or {busiest: peaks[busiest]}).items())
    return [
        CheckResult(
            "gpu_memory",
            not over,
            expected,
            f"peak {found}" + ("; declare more, or use gpu_memory: auto" if over else ""),
            severity="warn",
        )
    ]


def peaks_to_keep(records: Iterable[SpecResult], kept: Mapping[str, float]) -> dict[str, float]:
    """Each measured spec's peak on its busiest device, for the cache: a passed run's replaces what
    was kept; a failed run's only raises it (it may have stopped before reaching its peak)."""
    found: dict[str, float] = {}
    for record in records:
        if not record.peak_gpu_memory or record.outcome not in ("passed", "failed"):
            continue
        peak = float(max(record.peak_gpu_memory.values()))
        found[record.id] = peak if record.outcome == "passed" else max(peak, kept.get(record.id, 0.0))
    return found
