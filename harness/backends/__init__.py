"""Where runs execute, behind one protocol, found by name.

A backend answers: can it run here (`check_available`), which devices a run may use
(`inventory`), whether the harness leases those devices itself or the backend's scheduler
places each run (`leases_devices`), where one run goes (`place`), how to run one launch
(`run`), how to end everything a run of the harness started (`cancel_all`), and how many
workers it wants. Its own options are declared on the class and join the option table.

Adding a backend is one module with one class, plus one line in `REGISTRY`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from harness.backends.base import Backend, BackendError
from harness.backends.local import LocalBackend
from harness.backends.slurm import SlurmBackend
from harness.devices.visible import Inventory
from harness.devices.visible import skip_reason as device_skip_reason
from harness.options import RUN_OPTIONS, Option
from harness.spec.model import Spec

__all__ = ["REGISTRY", "Backend", "BackendError", "make", "names", "run_options", "skip_reason"]


# name -> class: `make(name, ...)` builds one from the run's option values and its tag.
REGISTRY: dict[str, Any] = {"local": LocalBackend, "slurm": SlurmBackend}


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def make(name: str, values: Mapping[str, Any], run_tag: str) -> Backend:
    """The backend `name`, configured from the run's option values (its own options included)."""
    if name not in REGISTRY:
        raise BackendError(f"--backend {name!r} is not known; known: {', '.join(REGISTRY)}")
    backend: Backend = REGISTRY[name].from_options(values, run_tag)
    return backend


def run_options() -> tuple[Option, ...]:
    """The option table: the core options (with the registered backends as choices), then each backend's own."""
    core = tuple(
        replace(option, choices=names(), help=f"{option.help} (one of: {', '.join(names())})")
        if option.name == "backend"
        else option
        for option in RUN_OPTIONS
    )
    return core + tuple(option for cls in REGISTRY.values() for option in cls.options)


def skip_reason(spec: Spec, inventory: Inventory) -> str | None:
    """Why this spec cannot run with these devices, or None when it can."""
    if inventory.scheduled:
        return None  # the scheduler decides; a request it can never meet fails with its words
    if spec.nodes > 1:
        across = [f"--backend {name}" for name, cls in REGISTRY.items() if cls.spans_nodes]
        return f"spans {spec.nodes} nodes; only {' or '.join(across) or 'a backend across nodes'} runs it"
    return device_skip_reason(spec, inventory)
