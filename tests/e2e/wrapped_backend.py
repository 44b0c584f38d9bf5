"""A third backend, defined outside the harness: every run goes through a wrapper command,
as an SSH host or a container runtime would put one in front of it.

Run as a script, it registers itself (the one registry line a new backend needs) and
hands its arguments to `python -m harness`.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from harness import backends
from harness.cli import main
from harness.devices.visible import Inventory
from harness.launch import Launch, Placement
from harness.options import Option
from harness.process import ProcessOutcome, Watcher, run_process
from harness.spec.model import Spec

# Prints where it runs, then becomes the command (as `ssh host cmd` or `docker exec` would).
WRAPPER = (
    "import os, sys; print(f'wrapped on {os.environ[\"WRAPPED_HOST\"]}', file=sys.stderr, flush=True); "
    "os.execvp(sys.argv[1], sys.argv[1:])"
)


class WrappedBackend:
    name: ClassVar[str] = "wrapped"
    leases_devices: ClassVar[bool] = False
    spans_nodes: ClassVar[bool] = False
    options: ClassVar[tuple[Option, ...]] = (
        Option("wrapped_host", "the host the wrapped backend names (--backend wrapped)", metavar="HOST"),
    )

    def __init__(self, host: str, run_tag: str):
        self.host = host
        self.run_tag = run_tag

    @classmethod
    def from_options(cls, values: Mapping[str, Any], run_tag: str) -> WrappedBackend:
        return cls(values.get("wrapped_host") or "nowhere", run_tag)

    def check_available(self) -> None:
        if self.host == "unreachable":
            raise backends.BackendError("the wrapped host is unreachable")

    def inventory(self, values: Mapping[str, Any]) -> Inventory:
        return Inventory(("wrapped",), "wrapped", f"the wrapped host {self.host}", scheduled=True)

    def workers(self, specs: int, inventory: Inventory) -> int | None:
        return 0

    def place(self, spec: Spec, devices: tuple[str, ...], inventory: Inventory) -> Placement:
        return Placement(spec.gpus, {"WRAPPED_HOST": self.host, "CUDA_VISIBLE_DEVICES": None})

    def run(
        self, launch: Launch, watchers: Sequence[Watcher] = (), on_start: Callable[[int], None] | None = None
    ) -> ProcessOutcome:
        wrapped = dataclasses.replace(launch, argv=[sys.executable, "-c", WRAPPER, *launch.argv])
        return dataclasses.replace(run_process(wrapped, watchers, on_start), placement=f"wrapped on {self.host}")

    def cancel_all(self) -> None:
        # Leaves a mark the test can see: the controller asked the backend to clean up.
        Path(self.run_tag_file).write_text(self.run_tag)

    @property
    def run_tag_file(self) -> str:
        return f"cancelled-{self.host}.txt"


if __name__ == "__main__":
    backends.REGISTRY["wrapped"] = WrappedBackend
    sys.exit(main(sys.argv[1:]))
