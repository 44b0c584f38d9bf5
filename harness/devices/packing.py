"""Which devices a run may take, given who holds what: the one rule the lease pool and the plan's simulator share.

A device has a capacity in MiB (its memory less the headroom and less what other users'
processes hold), or None when its memory is unknown. A run either holds its devices
whole (`memory` None: no `gpu_memory` declared, as before packing existed) or declares
MiB per device; declared runs share a device while their sum stays within its capacity,
and never share one with a run that holds it whole. A device of unknown capacity is only
ever held whole.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field


@dataclass
class Devices:
    """What is left of each device: room in MiB and how many runs hold it (whole or in part)."""

    capacity: dict[str, int | None]
    used: dict[str, int] = field(default_factory=dict)
    holders: dict[str, int] = field(default_factory=dict)
    whole: set[str] = field(default_factory=set)

    @classmethod
    def empty(cls, capacity: Mapping[str, int | None]) -> Devices:
        return cls(dict(capacity))

    def copy(self) -> Devices:
        return Devices(dict(self.capacity), dict(self.used), dict(self.holders), set(self.whole))

    def room(self, device: str) -> int:
        capacity = self.capacity.get(device)
        if capacity is None or device in self.whole:
            return 0
        return capacity - self.used.get(device, 0)

    def idle(self, device: str) -> bool:
        return not self.holders.get(device)

    def choose(
        self, k: int, memory: int | None, allowed: Sequence[str] | None = None, avoid: Sequence[str] = ()
    ) -> tuple[str, ...] | None:
        """k distinct devices this run may take now, or None; those in `avoid` only when no other fits.

        Declared runs go where the least room that still fits is left (best fit), so whole
        devices stay free for runs that hold them whole; simulated over mixed workloads
        (benchmarks/bench_packing.py) this beat spreading runs over idle devices first.
        """
        candidates = self.capacity if allowed is None else [d for d in allowed if d in self.capacity]
        if memory is None:
            # The first k idle ones outside `avoid`, else any: 10^5 simulated devices are not scanned whole per run.
            preferred = (d for d in candidates if self.idle(d) and d not in avoid)
            fitting = list(itertools.islice(preferred, k))
            if len(fitting) < k:
                fitting += [d for d in candidates if self.idle(d) and d in avoid][: k - len(fitting)]
        else:
            fitting = sorted(
                (d for d in candidates if self.room(d) >= memory), key=lambda d: (d in avoid, self.room(d))
            )
        return tuple(fitting[:k]) if len(fitting) >= k else None

    def take(self, devices: Iterable[str], memory: int | None) -> None:
        for device in devices:
            self.holders[device] = self.holders.get(device, 0) + 1
            if memory is None:
                self.whole.add(device)
            else:
                self.used[device] = self.used.get(device, 0) + memory

    def give(self, devices: Iterable[str], memory: int | None) -> None:
        for device in devices:
            self.holders[device] = max(0, self.holders.get(device, 0) - 1)
            if memory is None:
                self.whole.discard(device)
            else:
                self.used[device] = max(0, self.used.get(device, 0) - memory)

    def fits_ever(self, k: int, memory: int | None, allowed: Sequence[str] | None = None) -> bool:
        """Whether the run could start on these devices once nothing holds them."""
        return Devices.empty(self.capacity).choose(k, memory, allowed) is not None


def capacities(totals: Mapping[str, int | None], busy: Mapping[str, int], headroom: float) -> dict[str, int | None]:
    """Each device's room for declared runs: its memory less `headroom` (a fraction) less what others use."""
    return {
        device: None if total is None else int(total * (1.0 - headroom)) - busy.get(device, 0)
        for device, total in totals.items()
    }
