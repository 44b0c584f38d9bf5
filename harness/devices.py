"""Which devices this run may use, found without importing torch or initialising CUDA.

Children learn their devices only from the environment they start with, so everything
here is about strings: the entries of the caller's `CUDA_VISIBLE_DEVICES` (indices,
`GPU-…` UUIDs, `MIG-…` names) are handed on as they are, never re-numbered.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from typing import Mapping

from .spec import Spec

# cuda, fake or cpu here; a backend whose scheduler places runs names its own kind.
Kind = str


class DeviceError(Exception):
    """A device request that cannot be honoured (bad usage: exit 2)."""


@dataclass(frozen=True)
class Inventory:
    """The devices this run may lease, in the order they are handed out."""

    ids: tuple[str, ...]
    kind: Kind
    source: str
    # A scheduler places each run (and sets its devices): nothing is leased here, one entry stands for all.
    scheduled: bool = False

    @property
    def count(self) -> int:
        return len(self.ids)

    def describe(self) -> str:
        if self.scheduled:
            return f"devices from {self.source}"
        if self.kind == "cpu":
            return "no GPU (CPU only; one run at a time, cpu_ok specs only)"
        noun = "fake device" if self.kind == "fake" else "GPU"
        return f"{self.count} {noun}{'s' if self.count != 1 else ''} [{', '.join(self.ids)}] from {self.source}"


def parse_visible(value: str) -> tuple[str, ...]:
    """Entries of a CUDA_VISIBLE_DEVICES value; an empty value means no device.

    CUDA stops at the first invalid entry, so `-1` (the usual way to hide every GPU) and
    whatever follows it mean no device either.
    """
    entries = []
    for entry in (e.strip() for e in value.split(",")):
        if not entry or re.fullmatch(r"-\d+", entry):
            break
        entries.append(entry)
    return tuple(entries)


def nvidia_smi_ids(runner=subprocess.run) -> tuple[str, ...]:
    """GPU indices from `nvidia-smi -L`; a GPU split into MIG instances is listed by its MIG names."""
    if shutil.which("nvidia-smi") is None:
        return ()
    try:
        listing = runner(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    ids: list[str] = []
    for line in listing.splitlines():
        gpu = re.match(r"^GPU (\d+):", line)
        mig = re.search(r"\(UUID: (MIG-[^)]+)\)", line)
        if gpu:
            ids.append(gpu.group(1))
        elif mig and ids:
            if ids[-1].isdigit():
                ids.pop()  # the parent GPU is not usable as a whole once it is split
            ids.append(mig.group(1))
    return tuple(ids)


def discover(gpus: int | None = None, fake_gpus: int | None = None, environ: Mapping[str, str] | None = None, smi=nvidia_smi_ids) -> Inventory:
    """`--fake-gpus N`, else `--gpus N`, else the caller's CUDA_VISIBLE_DEVICES, else nvidia-smi, else CPU."""
    environ = os.environ if environ is None else environ
    if gpus is not None and fake_gpus is not None:
        raise DeviceError("give --gpus or --fake-gpus, not both")
    if fake_gpus is not None:
        if fake_gpus < 1:
            raise DeviceError(f"--fake-gpus must be at least 1, found {fake_gpus}")
        return Inventory(tuple(str(i) for i in range(fake_gpus)), "fake", f"--fake-gpus {fake_gpus}")
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    caller = parse_visible(visible) if visible is not None else None
    if gpus is not None:
        if gpus < 0:
            raise DeviceError(f"--gpus must be 0 or more, found {gpus}")
        if gpus == 0:
            return Inventory(("cpu",), "cpu", "--gpus 0")
        if caller is not None:
            if gpus > len(caller):
                raise DeviceError(f"--gpus {gpus} asks for more devices than CUDA_VISIBLE_DEVICES={visible!r} lists ({len(caller)})")
            return Inventory(caller[:gpus], "cuda", f"--gpus {gpus} within CUDA_VISIBLE_DEVICES")
        return Inventory(tuple(str(i) for i in range(gpus)), "cuda", f"--gpus {gpus}")
    if caller is not None:
        if not caller:
            return Inventory(("cpu",), "cpu", "CUDA_VISIBLE_DEVICES is empty")
        return Inventory(caller, "cuda", "CUDA_VISIBLE_DEVICES")
    found = smi()
    if found:
        return Inventory(found, "cuda", "nvidia-smi -L")
    return Inventory(("cpu",), "cpu", "no GPU found")


def skip_reason(spec: Spec, inventory: Inventory) -> str | None:
    """Why this spec cannot run on these devices of this machine, or None when it can."""
    if inventory.kind != "cuda" and spec.gpus > 0 and not spec.cpu_ok:
        where = "fake devices" if inventory.kind == "fake" else "no GPU here"
        return f"needs {spec.gpus} GPU{'s' if spec.gpus != 1 else ''} and is not cpu_ok ({where})"
    if spec.gpus > inventory.count:
        hint = f"; try --fake-gpus {spec.gpus}" if inventory.kind == "cpu" and spec.cpu_ok else ""
        return f"needs {spec.gpus} devices, this run has {inventory.count} ({inventory.describe()}){hint}"
    return None


def child_environment(devices: tuple[str, ...], inventory: Inventory) -> dict[str, str]:
    """The variables that tell a child which of this machine's devices are its own."""
    visible = "" if inventory.kind == "cpu" else ",".join(devices)
    return {"CUDA_VISIBLE_DEVICES": visible, "TRAINSPEC_DEVICE_KIND": inventory.kind}
