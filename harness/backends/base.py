"""What every backend answers (see the package's docstring), and its one error."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Protocol

from harness.devices.visible import Inventory
from harness.launch import Launch, Placement
from harness.options import Option
from harness.process import ProcessOutcome, Watcher
from harness.spec.model import Spec


class BackendError(Exception):
    """A backend that cannot run here, or cannot be asked for (bad usage: exit 2)."""


class Backend(Protocol):
    name: ClassVar[str]
    # True: the harness leases devices from the machine's pool; False: the backend's scheduler places each run.
    leases_devices: ClassVar[bool]
    spans_nodes: ClassVar[bool]
    options: ClassVar[tuple[Option, ...]]

    def check_available(self) -> None:
        """Raise BackendError (with what is missing) when runs cannot start through this backend."""

    def inventory(self, values: Mapping[str, Any]) -> Inventory:
        """The devices runs may use, as the run's options ask (`gpus`, `fake_gpus`, ...); raise DeviceError for a
        request that cannot be met."""

    def workers(self, specs: int, inventory: Inventory) -> int | None:
        """How many xdist workers to start for `specs` specs, or None for one per device."""

    def place(self, spec: Spec, devices: tuple[str, ...], inventory: Inventory) -> Placement:
        """How many devices the run holds and the variables that tell the child which."""

    def run(
        self, launch: Launch, watchers: Sequence[Watcher] = (), on_start: Callable[[int], None] | None = None
    ) -> ProcessOutcome:
        """Run one launch to its end (or its timeout, or a watcher's stop) and say how it ended."""

    def cancel_all(self) -> None:
        """End whatever this run of the harness left with the backend (workers killed mid-run)."""
