"""Which devices this run may use, found without importing torch or initialising CUDA.

Children learn their devices only from the environment they start with, so everything
here is about strings: the entries of the caller's `CUDA_VISIBLE_DEVICES` (indices,
`GPU-…` UUIDs, `MIG-…` names), or on AMD its `ROCR_VISIBLE_DEVICES`/`HIP_VISIBLE_DEVICES`,
are handed on as they are, never re-numbered. They are read as the runtime reads them: an
invalid entry ends the list, and a name given twice is refused.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NamedTuple

from harness.devices.vendor_tools import DeviceError, DeviceFacts, probe_devices
from harness.spec.model import Spec

# cuda, rocm, fake or cpu here; a backend whose scheduler places runs names its own kind.
Kind = str
GPU_KINDS: tuple[Kind, ...] = ("cuda", "rocm")
DEFAULT_FAKE_MEMORY = 80 * 1024
# What the AMD runtime reads, lowest level first: HIP's entries index into ROCR's list.
AMD_VARIABLES = ("ROCR_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES")
ENTRY = re.compile(r"\d+|GPU-[0-9a-fA-F-]+|MIG-(?:GPU-[0-9a-fA-F-]+/\d+/\d+|[0-9a-fA-F-]+)")


@dataclass(frozen=True)
class Inventory:
    """The devices this run may lease, in the order they are handed out; `facts` (aligned with
    `ids`, or empty) is what the vendor tool or `--fake-gpu-memory` says about each."""

    ids: tuple[str, ...]
    kind: Kind
    source: str
    facts: tuple[DeviceFacts, ...] = ()
    # A scheduler places each run (and sets its devices): nothing is leased here, one entry stands for all.
    scheduled: bool = False

    @property
    def count(self) -> int:
        return len(self.ids)

    def fact(self, device: str) -> DeviceFacts | None:
        """What is known of one device (memory in MiB, UUID, name), None when nothing is."""
        return self._facts_by_id.get(device)

    @functools.cached_property
    def _facts_by_id(self) -> dict[str, DeviceFacts]:
        # Asked once per device by the planner and the pool: a scan each time is quadratic in the devices.
        return {f.id: f for f in self.facts}

    @classmethod
    def from_dict(cls, data: Mapping) -> Inventory:
        """The inverse of `dataclasses.asdict`, for an inventory sent to xdist workers."""
        facts = tuple(DeviceFacts(**f) for f in data.get("facts", ()))
        return cls(tuple(data["ids"]), data["kind"], data["source"], scheduled=bool(data.get("scheduled")), facts=facts)

    def describe(self) -> str:
        if self.scheduled:
            return f"devices from {self.source}"
        if self.kind == "cpu":
            return f"no GPU ({self.source}; CPU only, one run at a time, cpu_ok specs only)"
        noun = {"fake": "fake device", "rocm": "AMD GPU"}.get(self.kind, "GPU")
        text = f"{self.count} {noun}{'s' if self.count != 1 else ''} [{', '.join(self.ids)}] from {self.source}"
        if self.kind not in GPU_KINDS:
            return text  # fake sizes are in the source, as given
        sizes = sorted({f.memory_total for f in self.facts if f.memory_total})
        busy = [f"{f.id} has {f.memory_used} MiB in use" for f in self.facts if f.memory_used]
        if sizes:
            text += f", {'/'.join(map(str, sizes))} MiB each"
        return text + (f" (busy: {'; '.join(busy)})" if busy else "")


class Visible(NamedTuple):
    """A *_VISIBLE_DEVICES value read as the runtime reads it."""

    ids: tuple[str, ...]
    dropped: tuple[str, ...]  # the first invalid entry and every entry after it


def parse_visible(value: str, variable: str = "CUDA_VISIBLE_DEVICES") -> Visible:
    """The entries the runtime would use; DeviceError for a device named twice, which CUDA refuses.

    An entry is an index, a `GPU-` UUID (or a prefix of one) or a `MIG-` name. The runtime
    stops at the first entry that is none of these, so `-1` (the usual way to hide every GPU)
    and whatever follows it mean no device.
    """
    entries = [entry.strip() for entry in value.split(",")]
    ids: list[str] = []
    seen: dict[str, str] = {}
    for position, entry in enumerate(entries):
        if not ENTRY.fullmatch(entry):
            return Visible(tuple(ids), tuple(e for e in entries[position:] if e))
        key = str(int(entry)) if entry.isdigit() else entry.lower()
        if key in seen:
            raise DeviceError(
                f"{variable}={value!r} names device {seen[key]} twice ({entry!r}); the runtime refuses such "
                "a list, so name each device once"
            )
        seen[key] = entry
        ids.append(entry)
    return Visible(tuple(ids), ())


Probe = Callable[[str], tuple[DeviceFacts, ...] | None]
TOOLS = {"cuda": "nvidia-smi", "rocm": "rocm-smi or amd-smi"}
STOPS = "the runtime stops at the first invalid entry"


def _lookup(entry: str, facts: tuple[DeviceFacts, ...]) -> DeviceFacts | None:
    """What the tool says of one caller entry; None when it names no device the tool lists.

    An index on a GPU split into MIG instances, or a UUID beside MIG instances (their
    parent GPU's), is kept without facts: the tool lists the instances, not the GPU.
    """
    if entry.isdigit():
        found = next((f for f in facts if f.id == str(int(entry))), None)
        split = any(f.index == int(entry) for f in facts)
    else:
        matches = [f for f in facts if f.uuid and f.uuid.lower().startswith(entry.lower())]
        found = matches[0] if len(matches) == 1 else None
        split = not matches and any(f.id.startswith("MIG-") for f in facts)
    if found is not None:
        return DeviceFacts(entry, found.uuid, found.name, found.memory_total, found.memory_used, found.index)
    return DeviceFacts(entry) if split else None


def _known(
    ids: tuple[str, ...], facts: tuple[DeviceFacts, ...] | None, variable: str
) -> tuple[tuple[str, ...], tuple[DeviceFacts, ...], tuple[str, ...]]:
    """The caller's entries the tool knows, with their facts, and those dropped from the first it does not know."""
    if facts is None:
        return ids, (), ()
    kept: list[DeviceFacts] = []
    for position, entry in enumerate(ids):
        fact = _lookup(entry, facts)
        if fact is None:
            return tuple(f.id for f in kept), tuple(kept), ids[position:]
        twin = next((k for k in kept if fact.uuid and k.uuid == fact.uuid), None)
        if twin is not None:
            raise DeviceError(
                f"{variable} names one device twice ({twin.id!r} and {entry!r} are both {fact.uuid}); the "
                "runtime refuses such a list, so name each device once"
            )
        kept.append(fact)
    return ids, tuple(kept), ()


def _dropped(entries: tuple[str, ...], why: str) -> list[str]:
    return [f"dropped {', '.join(map(repr, entries))}: {why}"] if entries else []


def _amd_visible(environ: Mapping[str, str]) -> tuple[tuple[str, ...], list[str], str]:
    """The caller's AMD devices as ROCR-level entries, what was dropped, and the variables read."""
    read = {name: parse_visible(environ[name], name) for name in AMD_VARIABLES if name in environ}
    rocr, hip = read.get("ROCR_VISIBLE_DEVICES"), read.get("HIP_VISIBLE_DEVICES")
    if rocr is None or hip is None:
        name, only = next(iter(read.items()))
        return only.ids, _dropped(only.dropped, STOPS), name
    notes = _dropped(rocr.dropped, f"ROCR_VISIBLE_DEVICES: {STOPS}") + _dropped(
        hip.dropped, f"HIP_VISIBLE_DEVICES: {STOPS}"
    )
    ids: list[str] = []
    for position, entry in enumerate(hip.ids):
        if not entry.isdigit() or int(entry) >= len(rocr.ids):
            notes += _dropped(
                hip.ids[position:], "HIP_VISIBLE_DEVICES indexes into ROCR_VISIBLE_DEVICES, which has no such entry"
            )
            break
        ids.append(rocr.ids[int(entry)])
    return tuple(ids), notes, "HIP_VISIBLE_DEVICES within ROCR_VISIBLE_DEVICES"


def _callers(environ: Mapping[str, str], probe: Probe) -> Inventory | None:
    """The devices the caller's environment names; None when it names none of its own."""
    kind: Kind
    if any(name in environ for name in AMD_VARIABLES):
        kind, (ids, notes, label) = "rocm", _amd_visible(environ)
    elif "CUDA_VISIBLE_DEVICES" in environ:
        read = parse_visible(environ["CUDA_VISIBLE_DEVICES"])
        kind, ids, notes, label = "cuda", read.ids, _dropped(read.dropped, STOPS), "CUDA_VISIBLE_DEVICES"
    else:
        return None
    # Nothing visible means no GPU is used, so a broken driver does not matter then.
    ids, facts, unknown = _known(ids, probe(kind) if ids else None, label)
    notes += _dropped(unknown, f"{TOOLS[kind]} lists no such device, and {STOPS}")
    if not ids:
        values = ", ".join(
            f"{name}={environ[name]!r}"
            for name in (*AMD_VARIABLES, "CUDA_VISIBLE_DEVICES")
            if name in environ and name in label
        )
        return Inventory(("cpu",), "cpu", f"{values} names no device" + (f" ({'; '.join(notes)})" if notes else ""))
    return Inventory(ids, kind, label + (f" ({'; '.join(notes)})" if notes else ""), facts)


def _machines(probe: Probe) -> Inventory:
    """Every device the vendor tools list: NVIDIA's, else AMD's, else none."""
    asked = []
    for kind in GPU_KINDS:
        facts = probe(kind)
        if facts:
            return Inventory(tuple(f.id for f in facts), kind, TOOLS[kind], facts)
        if facts is not None:
            asked.append(f"{TOOLS[kind]} lists none")
    return Inventory(
        ("cpu",), "cpu", "no GPU found: " + ("; ".join(asked) or "no nvidia-smi, rocm-smi or amd-smi on PATH")
    )


def discover(
    gpus: int | None = None,
    fake_gpus: int | None = None,
    environ: Mapping[str, str] | None = None,
    probe: Probe = probe_devices,
    fake_gpu_memory: int | None = None,
) -> Inventory:
    """`--fake-gpus N`, else `--gpus N` of what is visible, else what the caller's environment names
    (CUDA_VISIBLE_DEVICES; on AMD ROCR_/HIP_VISIBLE_DEVICES), else what nvidia-smi or rocm-smi lists, else CPU.

    `probe(kind)` gives the vendor tool's devices (None when it is not installed) and raises
    DeviceError when the tool is there but fails: a broken driver is an error, not "no GPU".
    """
    environ = os.environ if environ is None else environ
    if gpus is not None and fake_gpus is not None:
        raise DeviceError("give --gpus or --fake-gpus, not both")
    if fake_gpu_memory is not None and fake_gpus is None:
        raise DeviceError("--fake-gpu-memory sizes fake devices: give --fake-gpus N with it")
    if fake_gpus is not None:
        if fake_gpus < 1:
            raise DeviceError(f"--fake-gpus must be at least 1, found {fake_gpus}")
        memory = DEFAULT_FAKE_MEMORY if fake_gpu_memory is None else fake_gpu_memory
        ids = tuple(str(i) for i in range(fake_gpus))
        source = f"--fake-gpus {fake_gpus}" + (
            f" --fake-gpu-memory {fake_gpu_memory}MiB" if fake_gpu_memory is not None else ""
        )
        return Inventory(
            ids, "fake", source, tuple(DeviceFacts(i, name="fake", memory_total=memory, memory_used=0) for i in ids)
        )
    if gpus is not None and gpus < 0:
        raise DeviceError(f"--gpus must be 0 or more, found {gpus}")
    if gpus == 0:
        return Inventory(("cpu",), "cpu", "--gpus 0")
    visible = _callers(environ, probe) or _machines(probe)
    if gpus is None:
        return visible
    if visible.kind == "cpu" or gpus > visible.count:
        found = (
            f"found 0 ({visible.source})" if visible.kind == "cpu" else f"found {visible.count}: {visible.describe()}"
        )
        raise DeviceError(
            f"--gpus {gpus} needs {gpus} visible devices, {found}; --fake-gpus {gpus} simulates devices without a GPU"
        )
    return Inventory(visible.ids[:gpus], visible.kind, f"--gpus {gpus} of {visible.source}", visible.facts[:gpus])


def skip_reason(spec: Spec, inventory: Inventory) -> str | None:
    """Why this spec cannot run on these devices of this machine, or None when it can."""
    if inventory.kind not in GPU_KINDS and spec.gpus > 0 and not spec.cpu_ok:
        where = "fake devices" if inventory.kind == "fake" else "no GPU here"
        return f"needs {spec.gpus} GPU{'s' if spec.gpus != 1 else ''} and is not cpu_ok ({where})"
    if spec.gpus > inventory.count:
        hint = f"; try --fake-gpus {spec.gpus}" if inventory.kind == "cpu" and spec.cpu_ok else ""
        # Without a GPU the one slot is the CPU, no device: say so rather than "has 1".
        has = inventory.describe() if inventory.kind == "cpu" else f"{inventory.count} ({inventory.describe()})"
        return f"needs {spec.gpus} devices, this run has {has}{hint}"
    return None


def child_environment(devices: tuple[str, ...], inventory: Inventory) -> dict[str, str]:
    """The variables that tell a child which of this machine's devices are its own.

    On AMD the child's ROCR_VISIBLE_DEVICES holds its devices as the caller named them, and
    HIP_VISIBLE_DEVICES and CUDA_VISIBLE_DEVICES (which HIP also reads) index all of them,
    so no variable inherited from the caller can narrow or widen that list.
    """
    if inventory.kind == "rocm":
        positions = ",".join(str(i) for i in range(len(devices)))
        return {
            "ROCR_VISIBLE_DEVICES": ",".join(devices),
            "HIP_VISIBLE_DEVICES": positions,
            "CUDA_VISIBLE_DEVICES": positions,
            "TRAINSPEC_DEVICE_KIND": inventory.kind,
        }
    visible = "" if inventory.kind == "cpu" else ",".join(devices)
    return {"CUDA_VISIBLE_DEVICES": visible, "TRAINSPEC_DEVICE_KIND": inventory.kind}
