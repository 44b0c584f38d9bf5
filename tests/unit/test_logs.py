"""harness.logs.formats: Forgather, Hugging Face, JSON-lines, CSV and TensorBoard training logs, whole or cut short."""

from __future__ import annotations

import json
import math
import os
import time
import tracemalloc
from pathlib import Path

import pytest

from harness.logs.formats import LogEntry, LogError, detect_format, find_log, parse_log
from harness.spec.files import spec_from_mapping
from harness.spec.sections import LogSpec
from harness.spec.typed_yaml import SpecError

FORGATHER_RECORDS = [
    {
        "timestamp": "2025-01-01T00:00:01",
        "global_step": 10,
        "epoch": 0.1,
        "loss": 4.5,
        "grad_norm": 2.0,
        "learning_rate": 1e-3,
    },
    {
        "timestamp": "2025-01-01T00:00:02",
        "global_step": 20,
        "epoch": 0.2,
        "loss": 3.25,
        "grad_norm": 1.5,
        "learning_rate": 9e-4,
    },
    {"timestamp": "2025-01-01T00:00:03", "global_step": 20, "epoch": 0.2, "eval_loss": 3.5},
    {
        "timestamp": "2025-01-01T00:00:04",
        "global_step": 30,
        "epoch": 0.3,
        "loss": 2.75,
        "grad_norm": 1.0,
        "learning_rate": 8e-4,
    },
    {
        "timestamp": "2025-01-01T00:00:05",
        "global_step": 30,
        "train_runtime": 12.5,
        "train_samples_per_second": 80.0,
        "epoch": 0.3,
    },
]

HF_STATE = {
    "best_metric": None,
    "epoch": 1.0,
    "global_step": 30,
    "log_history": [
        {"epoch": 0.33, "grad_norm": 3.1, "learning_rate": 5e-5, "loss": 5.0, "step": 10},
        {"epoch": 0.33, "eval_loss": 4.8, "eval_runtime": 0.5, "step": 10},
        {"epoch": 0.66, "grad_norm": 2.2, "learning_rate": 3e-5, "loss": 4.0, "step": 20},
        {"epoch": 1.0, "grad_norm": 1.9, "learning_rate": 1e-5, "loss": 3.5, "step": 30},
        {
            "epoch": 1.0,
            "step": 30,
            "total_flos": 1000.0,
            "train_loss": 4.1666,
            "train_runtime": 9.0,
            "train_samples_per_second": 50.0,
        },
    ],
    "max_steps": 30,
}


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2))
    return path


def test_forgather_trainer_logs(tmp_path):
    path = write_json(tmp_path / "trainer_logs.json", FORGATHER_RECORDS)
    log = parse_log(path, LogSpec(), ("grad_norm", "learning_rate"))
    assert log.format == "forgather"
    assert log.curve() == [(10.0, 4.5), (20.0, 3.25), (30.0, 2.75)]
    assert log.notes == []
    assert log.final.loss == 2.75 and log.final.step == 30
    assert list(log.values("learning_rate")) == [1e-3, 9e-4, 8e-4]
    assert list(log.values("grad_norm")) == [2.0, 1.5, 1.0]
    assert log.path == path


def test_a_forgather_log_cut_mid_record_keeps_every_complete_record(tmp_path):
    text = json.dumps(FORGATHER_RECORDS, indent=2)
    cut = text.index('"loss": 2.75') + 5  # inside the fourth record
    path = tmp_path / "trainer_logs.json"
    path.write_text(text[:cut])
    log = parse_log(path, LogSpec())
    assert [e.step for e in log.entries] == [10.0, 20.0]
    assert len(log.notes) == 1
    assert "cut short" in log.notes[0] and "3 complete records" in log.notes[0]


def test_a_forgather_log_with_only_its_opening_bracket(tmp_path):
    path = tmp_path / "trainer_logs.json"
    path.write_text("[\n  ")
    log = parse_log(path, LogSpec())
    assert len(log.entries) == 0


def test_a_forgather_log_cut_between_records_says_so(tmp_path):
    text = json.dumps(FORGATHER_RECORDS[:2])
    path = tmp_path / "trainer_logs.json"
    path.write_text(text[: text.index("}, {") + 2])  # '[{...},' and nothing more
    log = parse_log(path, LogSpec())
    assert [e.step for e in log.entries] == [10.0]
    assert any("cut short" in note for note in log.notes)


def test_a_forgather_log_that_is_not_an_array(tmp_path):
    path = write_json(tmp_path / "trainer_logs.json", {"loss": 1})
    with pytest.raises(LogError, match="expected a JSON array of records, found dict"):
        parse_log(path, LogSpec())
    path.write_text("garbage without a bracket")
    with pytest.raises(LogError, match="found no '\\['"):
        parse_log(path, LogSpec())


def test_a_record_that_is_not_an_object(tmp_path):
    path = write_json(tmp_path / "trainer_logs.json", [{"loss": 1, "global_step": 1}, 7])
    with pytest.raises(LogError, match="every record to be a JSON object, found int"):
        parse_log(path, LogSpec())


def test_hugging_face_trainer_state(tmp_path):
    path = write_json(tmp_path / "checkpoint-30" / "trainer_state.json", HF_STATE)
    log = parse_log(path, LogSpec(), ("grad_norm",))
    assert log.format == "hf"
    # eval records and the final train_loss summary are not training entries
    assert log.curve() == [(10.0, 5.0), (20.0, 4.0), (30.0, 3.5)]
    assert list(log.values("grad_norm")) == [3.1, 2.2, 1.9]


def test_hugging_face_state_problems(tmp_path):
    path = tmp_path / "trainer_state.json"
    path.write_text('{"log_history": [')
    with pytest.raises(LogError, match="trainer_state.json is not valid JSON \\(line 1\\)"):
        parse_log(path, LogSpec())
    write_json(path, {"global_step": 3})
    with pytest.raises(LogError, match="has no log_history list"):
        parse_log(path, LogSpec())


def test_json_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("\n".join(json.dumps({"step": i, "loss": 1.0 / i}) for i in range(1, 5)) + "\n\n")
    log = parse_log(path, LogSpec())
    assert log.format == "jsonl"
    assert [e.step for e in log.entries] == [1.0, 2.0, 3.0, 4.0]
    assert log.notes == []


@pytest.mark.parametrize(
    ("name", "text", "note"),
    [
        (
            "metrics.jsonl",
            '{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo',
            "the last line (3) is cut short and was skipped",
        ),
        ("metrics.csv", "step,loss,lr\n1,3.0,0.1\n2,2.5,0.1\n3,2.", "the last line (4) is cut short and was skipped"),
    ],
    ids=["json-lines", "csv"],
)
def test_a_log_cut_mid_line_keeps_its_complete_records(tmp_path, name, text, note):
    path = tmp_path / name
    path.write_text(text)
    log = parse_log(path, LogSpec())
    assert [e.step for e in log.entries] == [1.0, 2.0]
    assert log.notes == [note]


@pytest.mark.parametrize(
    ("name", "text", "error"),
    [
        (
            "metrics.jsonl",
            '{"step": 1, "loss": 2.0}\n{"step": 2, loss: 1.5}\n{"step": 3, "loss": 1.0}\n',
            r"^line 2 is not JSON: ",
        ),
        ("metrics.csv", "step,loss\n1,3.0\n2,2.5,7\n", r"^line 3 has 3 fields, the header has 2$"),
    ],
    ids=["json-lines-not-json", "csv-more-fields-than-its-header"],
)
def test_a_malformed_line_in_the_middle_fails_naming_it(tmp_path, name, text, error):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(LogError, match=error):
        parse_log(path, LogSpec())


def test_loss_values_that_are_not_finite_numbers(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(
        '{"step": 1, "loss": NaN}\n'
        '{"step": 2, "loss": "nan"}\n'
        '{"step": 3, "loss": null}\n'
        '{"step": 4, "loss": Infinity}\n'
        '{"step": 5, "loss": " 1.25 "}\n'
        '{"step": 6, "loss": "oops"}\n'
        '{"step": 7, "loss": true}\n'
        '{"step": 8, "loss": -Infinity}\n'
    )
    entries = parse_log(path, LogSpec()).entries
    assert len(entries) == 8
    assert math.isnan(entries[0].loss) and math.isnan(entries[1].loss)
    assert entries[1].raw_loss == "nan"
    assert entries[2].loss is None and entries[2].raw_loss is None
    assert entries[3].loss == math.inf and entries[7].loss == -math.inf
    assert entries[4].loss == 1.25
    assert entries[5].loss is None and entries[5].raw_loss == "oops"
    assert entries[6].loss is None  # a boolean is not a loss
    values = parse_log(path, LogSpec(), ("loss",)).values("loss")
    # every number, NaN and infinities included (bounds must see them); no strings, nulls or booleans
    assert len(values) == 5
    assert [v for v in values if math.isfinite(v)] == [1.25]
    assert sum(math.isnan(v) for v in values) == 2 and math.inf in values and -math.inf in values


def test_custom_loss_and_step_keys(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"it": 5, "train/loss": 0.9, "loss": 100}\n{"it": 6, "train/loss": 0.8}\n{"it": 7, "other": 1}\n')
    log = parse_log(path, LogSpec(loss_key="train/loss", step_key="it"))
    assert log.curve() == [(5.0, 0.9), (6.0, 0.8)]


def test_an_explicit_format_overrides_the_file_name(tmp_path):
    path = tmp_path / "trainer_logs.json"
    path.write_text('{"step": 1, "loss": 3.0}\n')
    assert parse_log(path, LogSpec(format="jsonl")).curve() == [(1.0, 3.0)]


def test_an_unreadable_log(tmp_path):
    with pytest.raises(LogError, match="cannot read"):
        parse_log(tmp_path / "missing.jsonl", LogSpec())


@pytest.mark.parametrize(
    ("name", "text", "fmt"),
    [
        ("trainer_logs.json", "{}", "forgather"),
        ("trainer_state.json", "[]", "hf"),
        ("log.txt", '\n  [{"loss": 1}]', "forgather"),
        ("state.json", '{"global_step": 1, "log_history": []}', "hf"),
        ("metrics.json", '{"step": 1, "loss": 2}\n', "jsonl"),
        ("anything", "", "jsonl"),
    ],
)
def test_detect_format(name, text, fmt):
    assert detect_format(Path(name), text) == fmt


def test_find_log_prefers_the_shallowest_match(tmp_path):
    deep = write_json(tmp_path / "runs" / "a" / "b" / "trainer_logs.json", [])
    shallow = write_json(tmp_path / "runs" / "x" / "trainer_logs.json", [])
    assert find_log(tmp_path, LogSpec()) == shallow
    shallow.unlink()
    assert find_log(tmp_path, LogSpec()) == deep


def test_find_log_prefers_the_newest_at_equal_depth(tmp_path):
    old = write_json(tmp_path / "runs" / "old" / "trainer_logs.json", [])
    new = write_json(tmp_path / "runs" / "new" / "trainer_logs.json", [])
    past = time.time() - 100
    os.utime(old, (past, past))
    assert find_log(tmp_path, LogSpec()) == new


def test_find_log_search_order_and_formats(tmp_path):
    state = write_json(tmp_path / "trainer_state.json", HF_STATE)
    lines = tmp_path / "sub" / "metrics.jsonl"
    lines.parent.mkdir()
    lines.write_text('{"step": 1, "loss": 1}\n')
    assert find_log(tmp_path, LogSpec()) == state  # trainer_state.json is named before *.jsonl
    assert find_log(tmp_path, LogSpec(format="jsonl")) == lines
    assert find_log(tmp_path, LogSpec(format="forgather")) is None
    forgather = write_json(tmp_path / "deep" / "er" / "trainer_logs.json", [])
    assert find_log(tmp_path, LogSpec()) == forgather  # trainer_logs.json is looked for first


def test_find_log_with_an_explicit_glob(tmp_path):
    wanted = tmp_path / "runs" / "r7" / "log.jsonl"
    wanted.parent.mkdir(parents=True)
    wanted.write_text("")
    write_json(tmp_path / "trainer_logs.json", [])
    assert find_log(tmp_path, LogSpec(path="runs/*/log.jsonl")) == wanted
    assert find_log(tmp_path, LogSpec(path="log.jsonl")) == wanted  # a bare name matches at any depth
    assert find_log(tmp_path, LogSpec(path="nothing/*.json")) is None


def test_find_log_ignores_folders_named_like_logs(tmp_path):
    (tmp_path / "trainer_logs.json").mkdir()
    assert find_log(tmp_path, LogSpec()) is None


# CSV -----------------------------------------------------------------------------------------

# PyTorch Lightning's CSVLogger: one row per logging call, empty cells for what that call did not log.
LIGHTNING_CSV = (
    "epoch,step,train_loss,val_loss,lr-AdamW\r\n"
    "0,9,2.5,,0.001\r\n0,19,2.25,,0.001\r\n0,19,,2.4,\r\n1,29,2.0,,0.0009\r\n"
)


def test_a_lightning_metrics_csv(tmp_path):
    path = tmp_path / "lightning_logs" / "version_0" / "metrics.csv"
    path.parent.mkdir(parents=True)
    path.write_text(LIGHTNING_CSV, newline="")
    assert find_log(tmp_path, LogSpec()) == path
    log = parse_log(path, LogSpec(loss_key="train_loss"), ("val_loss", "lr-AdamW"))
    assert log.format == "csv" and log.notes == []
    assert log.curve() == [(9.0, 2.5), (19.0, 2.25), (29.0, 2.0)]  # the validation row is no training step
    assert list(log.values("val_loss")) == [2.4]
    assert list(log.values("lr-AdamW")) == [0.001, 0.001, 0.0009]


def test_a_plain_step_loss_csv_is_known_by_its_content(tmp_path):
    path = tmp_path / "loss.log"
    path.write_text("step,loss\n1,3.0\n2,nan\n3,2.0")  # the last line whole though without its newline
    log = parse_log(path, LogSpec())
    assert log.format == "csv"
    assert [e.step for e in log.entries] == [1.0, 2.0, 3.0]
    assert log.first_bad is not None and log.first_bad.raw_loss == "nan" and log.first_bad.step == 2.0
    assert log.notes == []


def test_an_explicit_csv_format_reads_any_name_and_quoted_cells(tmp_path):
    path = tmp_path / "train.out"
    path.write_text('"step","loss","note"\n1,2.0,"a, b"\n2,1.5,\n')
    log = parse_log(path, LogSpec(format="csv"))
    assert log.curve() == [(1.0, 2.0), (2.0, 1.5)]


def test_find_log_prefers_json_lines_to_csv_and_finds_csv_only_when_asked(tmp_path):
    (tmp_path / "predictions.csv").write_text("id,label\n1,2\n")
    (tmp_path / "train.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    assert find_log(tmp_path, LogSpec()) == tmp_path / "train.jsonl"
    assert find_log(tmp_path, LogSpec(format="csv")) == tmp_path / "predictions.csv"


@pytest.mark.parametrize(
    ("name", "text", "fmt"),
    [
        ("metrics.csv", "", "csv"),
        ("loss.txt", "step,loss\n1,2\n", "csv"),
        ("loss.txt", "loss\n1\n", "jsonl"),
        ("events.out.tfevents.1.host", "", "tensorboard"),
    ],
)
def test_detect_csv_and_event_files(name, text, fmt):
    assert detect_format(Path(name), text) == fmt


def test_log_formats_in_a_spec_and_their_mistakes():
    assert (
        spec_from_mapping(
            {"id": "a", "command": ["x"], "log": {"format": "csv", "loss_key": "train_loss"}}, Path("a.yaml")
        ).log.format
        == "csv"
    )
    with pytest.raises(SpecError, match=r"a\.yaml.*log\.format.*'csv'"):
        spec_from_mapping({"id": "a", "command": ["x"], "log": {"format": "cvs"}}, Path("a.yaml"))
    with pytest.raises(SpecError, match=r"log\.step_key.*take the step from each event"):
        spec_from_mapping(
            {"id": "a", "command": ["x"], "log": {"format": "tensorboard", "step_key": "it"}}, Path("a.yaml")
        )


# large logs ------------------------------------------------------------------------------------


def test_a_large_log_is_read_in_bounded_memory_and_checked_exactly(tmp_path):
    path = tmp_path / "train_log.jsonl"
    lines = 100_000
    with open(path, "w") as stream:
        for step in range(1, lines + 1):
            loss = "NaN" if step == 12_345 else f"{3.0 - step / lines:.6f}"
            stream.write(
                f'{{"step": {step}, "loss": {loss}, "grad_norm": {9.5 if step == 70_000 else 1.0}, "note": '
                f'"{"x" * 40}"}}\n'
            )
    tracemalloc.start()
    try:
        log = parse_log(path, LogSpec(), ("grad_norm",))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # Read whole, the 10 MB of text took about 70 MB as records. Now three doubles an entry are
    # kept (2.4 MB) and the file passes through in 1 MB pieces (about 10 MB while one is parsed,
    # however long the log).
    assert peak < 16 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB for a {path.stat().st_size / 1e6:.0f} MB log"
    assert len(log.entries) == lines
    assert log.entries[0] == LogEntry(1.0, 3.0 - 1 / lines, 3.0 - 1 / lines)
    assert log.final == LogEntry(float(lines), 2.0, 2.0)
    assert log.first_bad is not None and log.first_bad.step == 12_345 and math.isnan(log.first_bad.loss)
    assert max(log.values("grad_norm")) == 9.5 and len(log.values("grad_norm")) == lines
    curve = log.curve()
    assert len(curve) <= 10_000 and curve[0] == (1.0, log.entries[0].loss) and curve[-1] == (float(lines), 2.0)
    assert log.curve(max_points=3) == [
        (1.0, log.entries[0].loss),
        (33_335.0, log.entries[33_334].loss),
        (float(lines), 2.0),
    ]
