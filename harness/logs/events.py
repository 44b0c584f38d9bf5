"""TensorBoard event files read as a stream of records (`log.format: tensorboard`); needs the tensorboard package."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.logs.store import LogError
from harness.spec.sections import LogSpec


class EventLog:
    """Scalars of a TensorBoard event file, one record per event: {"step": its step, tag: value, ...}."""

    BATCH = 10_000

    def __init__(self, path: Path):
        try:
            from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
        except ImportError:
            raise LogError(LogSpec.TENSORBOARD_MISSING) from None
        self.loader = EventFileLoader(str(path))
        self.events: Any = None
        self.notes: list[str] = []
        self.exhausted = False

    def read(self, final: bool = False) -> list[dict]:
        # The loader's generator resumes where the last one stopped; a fresh one is taken once it is spent.
        if self.events is None:
            self.events = self.loader.Load()
        records = []
        for event in self.events:
            values = {v.tag: scalar for v in event.summary.value if (scalar := _scalar(v)) is not None}
            if values:
                records.append({**values, "step": event.step})
            if len(records) >= self.BATCH:
                self.exhausted = False
                return records
        self.events, self.exhausted = None, True
        return records


def _scalar(value: Any) -> float | None:
    """A summary value's number: the old `simple_value`, or a one-element tensor of the scalars plugin."""
    if value.HasField("simple_value"):
        return float(value.simple_value)
    if value.HasField("tensor") and value.metadata.plugin_data.plugin_name == "scalars":
        from tensorboard.util.tensor_util import make_ndarray

        array = make_ndarray(value.tensor)
        return float(array.reshape(-1)[0]) if array.size == 1 else None
    return None
