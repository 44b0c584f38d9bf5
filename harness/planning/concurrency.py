"""How many runs go at once: xdist workers from the devices, the cores and the specs, and the line `plan` prints about
it."""

from __future__ import annotations

from harness.backends import Backend
from harness.backends.local import cpu_threads, usable_cores
from harness.devices.visible import Inventory


def worker_count(given: int | None, backend: Backend, inventory: Inventory, at_once: int, runs: int) -> int:
    """xdist workers for `runs` specs of which the plan can place `at_once` together (specs packed on
    one device count one each): --workers (`given`, never more than the specs), else what the backend asks."""
    if given is not None:
        return min(given, runs)
    # A scheduler places every run itself: each waits in its queue, so all may go out at once.
    asked = backend.workers(runs if inventory.scheduled else min(at_once, runs), inventory)
    return asked if asked is not None else (inventory.count if inventory.count > 1 else 0)


def describe_concurrency(inventory: Inventory, workers: int) -> str:
    """How many runs go at once and what bounds them, e.g. '4 devices, 2 workers: 2 cores'."""
    runs = max(workers, 1)
    noun = "device" if inventory.kind != "cpu" else "CPU slot"
    text = f"{inventory.count} {noun}{'s' if inventory.count != 1 else ''}, {runs} worker{'s' if runs != 1 else ''}"
    cores = usable_cores()
    if runs < inventory.count:
        text += f": {cores} cores" if runs == cores else ": the specs to run"
    if not inventory.scheduled:
        text += (
            f"; each run's processes get OMP_NUM_THREADS={cpu_threads(1, inventory)} per device held (torchrun's "
            "ranks share their run's)"
        )
    return text
