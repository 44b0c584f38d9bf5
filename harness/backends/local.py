"""This machine: each run in its own process group, on devices leased from the machine's pool."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from harness.devices.visible import GPU_KINDS, DeviceError, Inventory, child_environment, discover
from harness.launch import Launch, Placement
from harness.options import Option
from harness.process import ProcessOutcome, Watcher, run_process
from harness.spec.model import Spec
from harness.spec.rules import parse_memory


def usable_cores() -> int:
    """The cores this process may run on (its affinity, which taskset, cgroups' cpusets and Slurm narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def cpu_threads(held: int, inventory: Inventory, processes: int = 1) -> int:
    """Threads for each process of a run: the run's share of the cores, in proportion to the
    devices it holds, split among its processes (torchrun's ranks each get a part, not the whole)."""
    return max(1, usable_cores() * max(held, 1) // (max(inventory.count, 1) * max(processes, 1)))


# Runs at once on simulated devices: no real plan reaches it by accident, and `--fake-gpus 100000`
# does not fork 100000 workers. Cores do not bound them: a simulated device stands for a real
# one, and runs that wait or sleep (most of a run's life on a real machine) overlap for free.
SIMULATED_CEILING = 64


def concurrency(at_once: int, inventory: Inventory) -> int:
    """Runs at once: what the plan can place together (one per device, more where specs share one);
    on simulated devices never more than SIMULATED_CEILING; on the CPU alone never more than the cores."""
    if inventory.kind in GPU_KINDS:
        return max(1, at_once)
    if inventory.kind == "fake":
        return max(1, min(at_once, SIMULATED_CEILING))
    return max(1, min(at_once, usable_cores()))


class LocalBackend:
    name: ClassVar[str] = "local"
    leases_devices: ClassVar[bool] = True
    spans_nodes: ClassVar[bool] = False
    options: ClassVar[tuple[Option, ...]] = ()

    @classmethod
    def from_options(cls, values: Mapping[str, Any], run_tag: str) -> LocalBackend:
        return cls()

    def check_available(self) -> None:
        return None

    def inventory(self, values: Mapping[str, Any]) -> Inventory:
        memory = values.get("fake_gpu_memory")
        try:
            mib = parse_memory(memory) if memory is not None else None
        except ValueError as error:
            raise DeviceError(f"--fake-gpu-memory: {error}") from None
        return discover(values.get("gpus"), values.get("fake_gpus"), fake_gpu_memory=mib)

    def workers(self, at_once: int, inventory: Inventory) -> int | None:
        runs = concurrency(at_once, inventory)
        return runs if runs > 1 else 0  # one run at a time needs no xdist worker

    def place(self, spec: Spec, devices: tuple[str, ...], inventory: Inventory) -> Placement:
        # This machine's cores are shared among its runs, as its devices are.
        processes = len(devices) if spec.launcher == "torchrun" else 1
        return Placement(
            len(devices),
            {
                "OMP_NUM_THREADS": str(cpu_threads(len(devices), inventory, processes)),
                **child_environment(devices, inventory),
            },
        )

    def run(
        self, launch: Launch, watchers: Sequence[Watcher] = (), on_start: Callable[[int], None] | None = None
    ) -> ProcessOutcome:
        return run_process(launch, watchers, on_start)

    def cancel_all(self) -> None:
        # Every run is a process group of this machine: the lease pool's clean-up ends what a dead worker left.
        return None
