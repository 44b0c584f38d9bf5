"""This machine: each run in its own process group, on devices leased from the machine's pool."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

from ..devices import DeviceError, Inventory, child_environment, discover, parse_memory
from ..launch import Launch, Placement, ProcessOutcome, Watcher
from ..options import Option
from ..process import run_process
from ..spec import Spec


def cpu_threads(held: int, inventory: Inventory) -> int:
    """A run's share of the cores: in proportion to the devices it holds."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores * max(held, 1) // max(inventory.count, 1))


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

    def workers(self, specs: int, inventory: Inventory) -> int | None:
        return None

    def place(self, spec: Spec, devices: tuple[str, ...], inventory: Inventory) -> Placement:
        # This machine's cores are shared among its runs, as its devices are.
        return Placement(len(devices), {"OMP_NUM_THREADS": str(cpu_threads(len(devices), inventory)), **child_environment(devices, inventory)})

    def run(self, launch: Launch, watchers: Sequence[Watcher] = (), on_start: Callable[[int], None] | None = None) -> ProcessOutcome:
        return run_process(launch, watchers, on_start)

    def cancel_all(self) -> None:
        # Every run is a process group of this machine: the lease pool's clean-up ends what a dead worker left.
        return None
