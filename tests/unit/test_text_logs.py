"""Text logs: patterns, the presets against hand-counted samples, numbers in any notation, sniffing,
and the checks and fail-fast watcher reading them as they read JSON lines."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

from harness.checks.after_run import read_log
from harness.checks.fail_fast import LossWatcher, StepWatcher
from harness.logs.formats import LogError, find_log, parse_log
from harness.logs.presets import PRESETS
from harness.logs.sniff import sniff
from harness.logs.text import text_number
from harness.spec.files import spec_from_mapping
from harness.spec.model import LogSpec
from harness.spec.typed_yaml import SpecError

REPO = Path(__file__).resolve().parents[2]

# Multi-line samples of each trainer's output, as it prints them (noise lines included), and the
# (step, loss) of each training line and the eval values counted by hand.
NANOGPT = """\
Overriding: max_iters = 60
tokens per iteration will be: 8,192
step 0: train loss 10.9880, val loss 10.9870
iter 0: loss 10.9903, time 1234.56ms, mfu -100.00%
iter 10: loss 2.1234, time 12.30ms, mfu 1.20%
iter 20: loss 1.9876, time 12.10ms, mfu 1.22%
step 50: train loss 1.9012, val loss 1.9534
iter 50: loss 1.8765, time 13.00ms, mfu 1.19%
"""
NANOGPT_LOSSES = [(0, 10.9903), (10, 2.1234), (20, 1.9876), (50, 1.8765)]
NANOGPT_VAL = [10.9870, 1.9534]

ESC = "\x1b"
TITAN_LINE = (
    "[titan] 2025-01-01 12:00:01,000 - root - INFO - {E}[31mstep: {step:>2}  {E}[32mloss: {loss:>7}  {E}[33mgrad_norm:"
    "  {norm}  {E}[34mmemory: {mem}GiB(2.08%)  {E}[35mtps: {tps}  {E}[36mtflops: 5.12  {E}[35mmfu: 1.23%{E}[39m\n"
)
TORCHTITAN = "[titan] 2025-01-01 12:00:00,000 - root - INFO - Training starts at step 1.\n" + "".join(
    TITAN_LINE.format(E=ESC, step=step, loss=loss, norm=norm, mem=mem, tps=tps)
    for step, loss, norm, mem, tps in (
        (1, "12.2541", "3.1406", "1.21", "1,234"),
        (2, "11.0034", "2.9000", "1.25", "12,345"),
        (10, "8.5000", "1.5000", "1.25", "12,400"),
    )
)
TORCHTITAN_LOSSES = [(1, 12.2541), (2, 11.0034), (10, 8.5)]
TORCHTITAN_TPS = [1234.0, 12345.0, 12400.0]

MEGATRON = "".join(
    f" iteration {step:>8}/     100 | consumed samples: {step * 64:>12} | elapsed time per iteration (ms): 123.4 |"
    f" learning rate: 1.000000E-04 | global batch size:    64 | lm loss: {loss} | loss scale: 1.0 |"
    f" grad norm: 3.456 | number of skipped iterations:   0 | number of nan iterations:   0 |\n"
    for step, loss in ((10, "1.034567E+01"), (20, "8.765432E+00"), (30, "7.000000E+00"))
) + (
    "-" * 60
    + "\n validation loss at iteration 30 | lm loss value: 7.123456E+00 | lm loss PPL: 1.240000E+03 | \n"
    + "-" * 60
    + "\n"
)
MEGATRON_LOSSES = [(10, 10.34567), (20, 8.765432), (30, 7.0)]

LLMC = """\
num_parameters: 124475904
step    1/74 | train loss 4.367631 | norm 15.7302 | lr 6.00e-06 | (123.45 ms | 41234 tok/s)
step    2/74 | train loss 4.201234 | norm 12.1000 | lr 1.20e-05 | (120.00 ms | 42000 tok/s)
val loss 4.123456
step   74/74 | train loss 3.500000 | norm 1.0000 | lr 6.00e-04 | (119.50 ms | 42100 tok/s)
"""
LLMC_LOSSES = [(1, 4.367631), (2, 4.201234), (74, 3.5)]

SAMPLES = {
    "nanogpt": (NANOGPT, NANOGPT_LOSSES),
    "torchtitan": (TORCHTITAN, TORCHTITAN_LOSSES),
    "megatron": (MEGATRON, MEGATRON_LOSSES),
    "llmc": (LLMC, LLMC_LOSSES),
}


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def pairs(log) -> list[tuple[float | None, float | None]]:
    return [(e.step, e.loss) for e in log.entries]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_each_preset_reads_its_sample_as_counted_by_hand(tmp_path, preset):
    text, expected = SAMPLES[preset]
    log = parse_log(write(tmp_path / "stdout.log", text), LogSpec(format=preset))
    assert pairs(log) == [(float(s), pytest.approx(v)) for s, v in expected]


def test_eval_lines_give_their_own_values_and_steps(tmp_path):
    nanogpt = parse_log(write(tmp_path / "n.log", NANOGPT), LogSpec(format="nanogpt"), ("val_loss", "mfu"))
    assert list(nanogpt.values("val_loss")) == pytest.approx(NANOGPT_VAL)
    assert list(nanogpt.values("mfu")) == pytest.approx([-100.0, 1.2, 1.22, 1.19])
    titan = parse_log(write(tmp_path / "t.log", TORCHTITAN), LogSpec(format="torchtitan"), ("tps", "memory_gib"))
    assert list(titan.values("tps")) == TORCHTITAN_TPS  # `1,234` is one thousand two hundred thirty-four
    assert list(titan.values("memory_gib")) == pytest.approx([1.21, 1.25, 1.25])
    megatron = parse_log(write(tmp_path / "m.log", MEGATRON), LogSpec(format="megatron"), ("val_loss", "val_ppl"))
    assert list(megatron.values("val_loss")) == pytest.approx([7.123456])
    assert list(megatron.values("val_ppl")) == pytest.approx([1240.0])
    llmc = parse_log(write(tmp_path / "l.log", LLMC), LogSpec(format="llmc"), ("val_loss", "tokens_per_s"))
    assert list(llmc.values("val_loss")) == pytest.approx([4.123456])
    assert list(llmc.values("tokens_per_s")) == [41234.0, 42000.0, 42100.0]


@pytest.mark.parametrize(
    ("text", "value"),
    [("1.034567E+01", 10.34567), ("6.00e-06", 6e-06), ("1,234", 1234.0), ("12,345,678.5", 12345678.5)]
    + [("1.20%", 1.2), ("2.1234,", 2.1234), (" 42 ", 42.0), ("-3", -3.0)],
)
def test_numbers_in_any_notation(text, value):
    assert text_number(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["nan", "NaN", "inf", "-inf", "Infinity"])
def test_nan_and_infinities_are_numbers_that_fail(text):
    assert not math.isfinite(text_number(text))


def test_a_word_where_a_number_belongs_is_kept_as_logged(tmp_path):
    spec = LogSpec(format="text", patterns=[r"loss=(?P<loss>\S+)"])
    log = parse_log(write(tmp_path / "stdout.log", "loss=2.5\nloss=oops\n"), spec)
    assert log.first_bad is not None and log.first_bad.raw_loss == "oops" and log.first_bad.step == 2.0


def test_patterns_without_a_step_number_their_lines_and_merge_on_one_line(tmp_path):
    spec = LogSpec(format="text", patterns=[r"loss (?P<loss>\S+)", r"lr (?P<lr>\S+)"])
    text = "boot\nloss 3.0 lr 0.1\nnoise\nloss 2.0 lr 0.2\nloss 1.0 lr 0.3\n"
    log = parse_log(write(tmp_path / "stdout.log", text), spec, ("lr",))
    assert pairs(log) == [(1.0, 3.0), (2.0, 2.0), (3.0, 1.0)]
    assert list(log.values("lr")) == [0.1, 0.2, 0.3]
    assert log.series()["lr"] == [(1.0, 0.1), (2.0, 0.2), (3.0, 0.3)]


def test_carriage_returns_and_colours(tmp_path):
    spec = LogSpec(format="text", patterns=[r"step (?P<step>\d+) loss (?P<loss>\S+)"])
    text = f"progress 10%\rprogress 50%\rstep 1 loss {ESC}[1m2.5{ESC}[0m\nstep 2 loss 2.0\n"
    assert pairs(parse_log(write(tmp_path / "stdout.log", text), spec)) == [(1.0, 2.5), (2.0, 2.0)]


def test_a_group_that_never_matched_is_named(tmp_path):
    spec = LogSpec(format="text", patterns=[r"loss (?P<loss>\S+)(?: acc (?P<acc>\S+))?", r"eval (?P<val_loss>\S+)"])
    path = write(tmp_path / "stdout.log", "loss 3.0\nloss 2.0\neval 2.5\n")
    with pytest.raises(
        LogError,
        match=r"the group 'acc' of patterns\[0\] .* never matched in the log \(the pattern matched 2 of 3 lines\)",
    ):
        parse_log(path, spec)
    write(path, "loss 3.0 acc 0.1\n")
    with pytest.raises(
        LogError, match=r"patterns\[1\] 'eval \(\?P<val_loss>\\\\S\+\)' matched no line of the log \(1 line\)"
    ):
        parse_log(path, spec)


def test_a_preset_that_reads_nothing_is_named_with_what_would(tmp_path):
    out = tmp_path / "out"
    write(out / "stdout.log", NANOGPT)
    spec = spec_from_mapping({"id": "t", "command": ["x"], "log": {"format": "llmc"}}, Path("t.yaml"))
    log, problem = read_log(spec, out, [out / "stdout.log"])
    assert log is None
    assert "no line of the log (8 lines) matches the llmc format's patterns" in problem
    assert "stdout.log prints nanogpt's lines (4 read): try log: {format: nanogpt}" in problem


def test_no_log_names_the_formats_tried_and_what_stdout_shows(tmp_path):
    out = tmp_path / "out"
    write(out / "stdout.log", "epoch 1 batch 10 | loss: 3.25\nepoch 1 batch 20 | loss: 2.5\n")
    spec = spec_from_mapping({"id": "t", "command": ["x"]}, Path("t.yaml"))
    log, problem = read_log(spec, out, [out / "stdout.log", out / "stderr.log"])
    assert log is None
    assert "formats tried: forgather, hf, jsonl, csv, tensorboard" in problem
    assert "stdout.log prints a loss as text: try log: {format: text, patterns: [" in problem
    suggested = sniff(out / "stdout.log").patterns
    assert pairs(parse_log(out / "stdout.log", LogSpec(format="text", patterns=suggested))) == [(1.0, 3.25), (2.0, 2.5)]


def test_a_json_lines_path_that_holds_text_says_what_reads_it(tmp_path):
    out = tmp_path / "out"
    write(out / "stdout.log", NANOGPT)
    spec = spec_from_mapping({"id": "t", "command": ["x"], "log": {"path": "stdout.log"}}, Path("t.yaml"))
    _, problem = read_log(spec, out)
    assert "is not JSON" in problem and "try log: {format: nanogpt}" in problem


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_sniff_names_each_preset(tmp_path, preset):
    found = sniff(write(tmp_path / "stdout.log", SAMPLES[preset][0]))
    assert found.preset == preset and found.matched == len(SAMPLES[preset][1])


def test_logs_sniff_command(tmp_path):
    path = write(tmp_path / "stdout.log", LLMC)
    run = subprocess.run(
        [sys.executable, "-m", "harness", "logs", "sniff", str(path)], capture_output=True, text=True, cwd=REPO
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines() == [
        f"{path}: llmc (3 loss lines in the first 5, steps 1 to 74)",
        "log:",
        "  format: llmc",
        "  source: stdout",
    ]
    silent = write(tmp_path / "quiet.log", "hello\n")
    run = subprocess.run(
        [sys.executable, "-m", "harness", "logs", "sniff", str(silent)], capture_output=True, text=True, cwd=REPO
    )
    assert run.returncode == 1 and "none of the first 1 lines shows a loss" in run.stderr


def test_a_text_log_is_each_stage_s_own_stream(tmp_path):
    log = LogSpec(format="nanogpt").on_streams("resume.stdout.log", "resume.stderr.log")
    assert log.source == "resume.stdout.log"
    write(tmp_path / "train.stdout.log", NANOGPT)
    write(tmp_path / "resume.stdout.log", "iter 60: loss 1.5\n")
    assert find_log(tmp_path, log) == tmp_path / "resume.stdout.log"
    err = LogSpec(format="text", source="stderr", patterns=["l (?P<loss>.)"]).on_streams("a.out", "a.err")
    assert err.source == "a.err"
    assert LogSpec(format="text", source="logs/*.txt", patterns=["l (?P<loss>.)"]).on_streams("a", "b").source == (
        "logs/*.txt"
    )


def test_fail_fast_and_interrupt_follow_a_text_log_as_it_grows(tmp_path):
    path = write(tmp_path / "stdout.log", "iter 0: loss 3.0, time 1.0ms, mfu 1.0%\n")
    watcher = LossWatcher(tmp_path, LogSpec(format="nanogpt", source="stdout.log"))
    steps = StepWatcher(tmp_path, LogSpec(format="nanogpt", source="stdout.log"), 20)
    assert watcher.poll() is None and steps.poll() is None
    with open(path, "a") as stream:
        stream.write("iter 10: loss 2.0, time 1.0ms, mfu 1.0%\niter 20: loss nan, time 1.0ms, mfu 1.0%\n")
    assert watcher.poll() == "loss nan at step 20 in stdout.log"
    assert steps.poll() == "interrupted as planned: the log showed step 20 (interrupt_at_step 20)"


@pytest.mark.parametrize(
    ("log", "field", "message"),
    [
        ({"format": "text"}, "log.patterns", "format text needs patterns"),
        ({"format": "text", "patterns": ["loss (?P<loss>"]}, "log.patterns[0]", "is not a valid regular expression"),
        ({"format": "text", "patterns": [r"acc (?P<acc>\S+)"]}, "log.patterns", "no pattern has a group named 'loss'"),
        ({"format": "nanogpt", "path": "out.log"}, "log.path", "give source instead"),
        ({"format": "jsonl", "source": "stdout"}, "log.source", "only the text formats"),
        ({"format": "llmc", "source": "../x.log"}, "log.source", "must stay inside the output dir"),
        ({"format": "nanogptt"}, "log.format", "did you mean 'nanogpt'?"),
    ],
)
def test_text_log_fields_are_validated(log, field, message):
    with pytest.raises(SpecError) as caught:
        spec_from_mapping({"id": "t", "command": ["x"], "log": log}, Path("t.yaml"))
    assert caught.value.field == field and message in caught.value.message
