"""Parity and reproducibility in a spec: its curve must equal another spec's, another stage's,
or its own on a repeat. The blocks (`parity`, `reproducible`, a stage's `parity`) and the ids
of a spec's repeats; who is compared with whom is `spec/compared.py`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from harness.spec.typed_yaml import option

# A repeat's id is its spec's id, this mark and its number (2 and up; the first run keeps the
# plain id). Spec ids cannot hold it, so a repeat never takes a spec's id.
REPEAT_MARK = "@"


@dataclass(frozen=True, kw_only=True)
class CurveTolerance:
    """Which curve is compared, over which steps, and how close each step must be."""

    metric: str = option(
        "loss",
        doc="what is compared: `loss` (the log's loss key) or another key the training records log (e.g. grad_norm)",
    )
    rtol: float = option(
        1e-4,
        doc="relative tolerance: a step passes when |value - other| <= atol + rtol * |other|",
        minimum=0,
    )
    atol: float = option(0.0, doc="absolute tolerance, in the metric's units", minimum=0)
    steps: Literal["all", "final"] | list[float] = option(
        "all",
        doc="the steps compared, among those both curves logged: all, final (the last of them),"
        " or [FROM, TO] (inclusive)",
        example=[10, 40],
    )

    def check(self) -> Iterable[tuple[str, str]]:
        if isinstance(self.steps, list):
            if len(self.steps) != 2:
                yield "steps", f"give all, final or [FROM, TO], found a list of {len(self.steps)}"
            elif self.steps[0] > self.steps[1]:
                yield "steps", f"FROM ({self.steps[0]:g}) is after TO ({self.steps[1]:g}): no step is compared"

    @property
    def window(self) -> str:
        """The steps compared, in words."""
        if isinstance(self.steps, list):
            return f"steps {self.steps[0]:g} to {self.steps[1]:g}"
        return "the final common step" if self.steps == "final" else "every common step"


@dataclass(frozen=True, kw_only=True)
class ParitySpec(CurveTolerance):
    """This spec's curve must equal another spec's (DDP on 2 ranks == 1 process with accumulation 2)."""

    spec: str = option(
        doc="id of the spec whose curve this one must equal; both run in the same run", example="tinylm_accum"
    )


@dataclass(frozen=True, kw_only=True)
class StageParitySpec(CurveTolerance):
    """A stage's curve must equal an earlier stage's over the steps both logged (a resumed tail == a straight run)."""

    stage: str = option(doc="id of an earlier stage of this spec (an uninterrupted run)", example="straight")


@dataclass(frozen=True, kw_only=True)
class ReproducibleSpec(CurveTolerance):
    """Every repeat's curve must equal the first run's."""

    rtol: float = option(
        0.0,
        doc="relative tolerance: a step passes when |value - first run's| <= atol + rtol * |first run's|",
        minimum=0,
    )


def repeat_id(spec_id: str, number: int) -> str:
    return spec_id if number == 1 else f"{spec_id}{REPEAT_MARK}{number}"
