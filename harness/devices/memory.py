"""GPU memory per spec: what it declares (`gpu_memory`), what each device can hold, what runs really used.

A spec that declares `gpu_memory: 6GiB` asks for that much on each of its devices; `auto`
asks for its recorded peak (from earlier runs on real GPUs) plus the headroom, and holds its
devices whole until a peak is on record. A device's room for declared specs is its memory
less the headroom (a fraction, `gpu_headroom`) less what other processes used when the run
began (another user's job).
"""

from __future__ import annotations

from collections.abc import Mapping

from harness.devices.packing import capacities
from harness.devices.visible import Inventory
from harness.spec.model import Spec
from harness.spec.rules import parse_memory

DEFAULT_HEADROOM = 0.10
AUTO = "auto"


def headroom_of(value: object) -> float:
    """The `gpu_headroom` option's value as a fraction; ValueError naming the bounds."""
    if value is None:
        return DEFAULT_HEADROOM
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
        raise ValueError(
            f"gpu_headroom must be a fraction from 0 up to (not including) 1, e.g. 0.1 for 10%; found {value!r}"
        )
    return float(value)


def memory_request(spec: Spec, peaks: Mapping[str, float], headroom: float) -> int | None:
    """MiB the spec asks for on each device; None: it holds its devices whole."""
    if spec.gpu_memory is None:
        return None
    if spec.gpu_memory == AUTO:
        peak = peaks.get(spec.id)
        return None if peak is None else max(1, int(peak * (1 + headroom)))
    return parse_memory(spec.gpu_memory)


def device_capacity(inventory: Inventory, headroom: float) -> dict[str, int | None]:
    """Each device's MiB for declared specs, by device name; None where its memory is unknown."""
    facts = {device: inventory.fact(device) for device in inventory.ids}
    totals = {d: f.memory_total if f else None for d, f in facts.items()}
    busy = {d: f.memory_used for d, f in facts.items() if f and f.memory_used}
    return capacities(totals, busy, headroom)


def device_keys(inventory: Inventory) -> dict[str, str]:
    """Each device's machine-wide identity: its UUID where the vendor tool gave one, else its name here."""
    keys = {}
    for device in inventory.ids:
        fact = inventory.fact(device)
        keys[device] = fact.uuid if fact and fact.uuid else device
    return keys


def memory_skip(spec: Spec, memory: int | None, capacity: Mapping[str, int | None]) -> str | None:
    """Why a declared spec can never fit these devices, or None."""
    if memory is None or spec.gpus == 0:
        return None
    known = sorted((c for c in capacity.values() if c is not None), reverse=True)
    if not known or len([c for c in known if c >= memory]) >= spec.gpus:
        return None
    return (
        f"declares gpu_memory {spec.gpu_memory} ({memory} MiB) per device on {spec.gpus}; the devices have at "
        f"most {max(0, known[0])} MiB free after headroom and other processes"
    )


def fit_problem(spec: Spec, inventory: Inventory, peaks: Mapping[str, float], headroom: float) -> str | None:
    """Why the spec's declared memory can never fit this run's devices, or None."""
    return memory_skip(
        spec, memory_request(spec, peaks, headroom) if spec.gpus else None, device_capacity(inventory, headroom)
    )
