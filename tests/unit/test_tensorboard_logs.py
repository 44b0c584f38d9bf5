"""TensorBoard event files as training logs: read by tag, followed as they grow, and a clear
error where the tensorboard package is missing. Event files are written with tensorboard's own
writer; the tests that need it skip where it is not installed (`pip install tensorboard`)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from harness.checks.after_run import run_checks
from harness.checks.fail_fast import LossWatcher
from harness.logs.formats import LogError, find_log, parse_log
from harness.process import ProcessOutcome
from harness.spec.files import spec_from_mapping
from harness.spec.sections import LogSpec
from harness.spec.typed_yaml import SpecError

needs_tensorboard = pytest.mark.skipif(
    importlib.util.find_spec("tensorboard") is None,
    reason="tensorboard is not installed (pip install tensorboard)",
)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Events:
    """An event file written the way TensorBoard writers write it, a scalar per tag and step."""

    def __init__(self, logdir: Path):
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        logdir.mkdir(parents=True, exist_ok=True)
        self.writer = EventFileWriter(str(logdir))
        self.path = Path(self.writer.get_logdir()) / next(
            p.name for p in logdir.iterdir() if p.name.startswith("events.out.tfevents.")
        )

    def scalars(self, step: int, tensor: bool = False, **values: float) -> Events:
        from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, types_pb2

        def value(tag: str, number: float):
            if not tensor:
                return summary_pb2.Summary.Value(tag=tag, simple_value=number)
            # The newer form (tf.summary.scalar, SummaryWriter(new_style=True)): a tensor of the scalars plugin.
            metadata = summary_pb2.SummaryMetadata(
                plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")
            )
            return summary_pb2.Summary.Value(
                tag=tag,
                metadata=metadata,
                tensor=tensor_pb2.TensorProto(dtype=types_pb2.DT_DOUBLE, double_val=[number]),
            )

        tags = [value(tag.replace("__", "/"), number) for tag, number in values.items()]
        self.writer.add_event(event_pb2.Event(step=step, wall_time=1.0, summary=summary_pb2.Summary(value=tags)))
        self.writer.flush()
        return self


@needs_tensorboard
def test_scalars_are_read_by_tag_with_the_events_step(tmp_path):
    events = Events(tmp_path / "runs" / "exp1")
    events.scalars(10, train__loss=3.0, train__lr=0.1).scalars(10, eval__loss=2.9)
    events.scalars(20, train__loss=2.5, train__lr=0.05).scalars(30, tensor=True, train__loss=2.0)
    assert find_log(tmp_path, LogSpec()) == events.path
    log = parse_log(events.path, LogSpec(loss_key="train/loss"), ("eval/loss", "train/lr"))
    assert log.format == "tensorboard"
    assert log.curve() == [(10.0, 3.0), (20.0, 2.5), (30.0, 2.0)]
    assert list(log.values("eval/loss")) == pytest.approx([2.9])
    assert list(log.values("train/lr")) == pytest.approx([0.1, 0.05])


@needs_tensorboard
def test_an_event_file_cut_mid_record_keeps_its_complete_events(tmp_path):
    events = Events(tmp_path).scalars(1, loss=3.0).scalars(2, loss=2.0)
    data = events.path.read_bytes()
    events.path.write_bytes(data[:-5])
    assert [e.step for e in parse_log(events.path, LogSpec()).entries] == [1.0]


@needs_tensorboard
def test_fail_fast_follows_an_event_file_as_it_grows(tmp_path):
    out = tmp_path / "out"
    watcher = LossWatcher(out, LogSpec(format="tensorboard", loss_key="train/loss"), clock=Clock())
    assert watcher.poll() is None
    events = Events(out / "tb").scalars(1, train__loss=3.0)
    assert watcher.poll() is None and watcher.path == events.path
    events.scalars(2, train__loss=2.5)
    assert watcher.poll() is None
    events.scalars(3, train__loss=float("nan"))
    assert watcher.poll() == f"loss nan at step 3 in {events.path.name}"


@needs_tensorboard
def test_a_spec_on_an_event_file_is_checked_end_to_end(tmp_path):
    out = tmp_path / "out"
    Events(out / "logs").scalars(1, train__loss=3.0).scalars(2, train__loss=1.5)
    fields = {
        "log": {"format": "tensorboard", "loss_key": "train/loss"},
        "min_steps_logged": 2,
        "loss": {"final_max": 2.0, "must_decrease": True},
    }
    spec = spec_from_mapping({"id": "tb", "command": ["x"], **fields}, Path("tb.yaml"))
    stderr = tmp_path / "stderr.log"
    stderr.write_text("")
    results, log = run_checks(spec, ProcessOutcome(exit_code=0, duration=1.0), out, stderr)
    assert [r.line() for r in results if not r.passed] == []
    assert log is not None and log.final is not None and log.final.loss == 1.5


def test_without_tensorboard_the_spec_and_the_log_name_the_extra(tmp_path, monkeypatch):
    for name in [n for n in sys.modules if n == "tensorboard" or n.startswith("tensorboard.")] or ["tensorboard"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed, though an earlier test imported it
    with pytest.raises(SpecError, match=r"tb\.yaml.*log\.format.*pip install tensorboard"):
        spec_from_mapping({"id": "tb", "command": ["x"], "log": {"format": "tensorboard"}}, Path("tb.yaml"))
    found = tmp_path / "events.out.tfevents.1.host"
    found.write_bytes(b"\0" * 16)  # an event file that auto-detection picks up
    with pytest.raises(
        LogError,
        match=r"^reading TensorBoard event files needs the tensorboard package: pip install tensorboard \(or the"
        r" harness.s tensorboard extra\)$",
    ):
        parse_log(found, LogSpec())
    watcher = LossWatcher(tmp_path, LogSpec(), clock=Clock())
    assert watcher.poll() is None  # fail-fast stands aside; the final check says why
