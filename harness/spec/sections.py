"""The blocks of a spec: its training log (files, or text read with patterns or a preset), loss and metric
bounds, baseline tolerances, stderr patterns, inference, stages and the Forgather finalize step; each a frozen
dataclass with its defaults and docs."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Literal

from harness.spec.parity import StageParitySpec
from harness.spec.rules import (
    path_problem,
    patterns_problem,
    process_problems,
    regex_problem,
    relative_inside,
    run_problems,
    split_command,
)
from harness.spec.typed_yaml import option

ArgsStyle = Literal["dashes", "equals", "hydra"]


@dataclass(frozen=True)
class LogSpec:
    path: str | None = option(
        None,
        doc="glob of the training log, relative to the output dir; by default the first file a known format names"
        " (trainer_logs.json, trainer_state.json, *.jsonl, metrics.csv, *.csv, events.out.tfevents.*)",
        example="runs/*/trainer_logs.json",
    )
    format: Literal[
        "auto", "forgather", "hf", "jsonl", "csv", "tensorboard", "text", "nanogpt", "torchtitan", "megatron", "llmc"
    ] = option(
        "auto",
        doc="log format: Forgather's trainer_logs.json, Hugging Face trainer_state.json (log_history), JSON lines,"
        " CSV with a header row (Lightning's metrics.csv), TensorBoard event files (needs the tensorboard extra),"
        " text read with your `patterns`, or the text a known trainer prints: nanogpt, torchtitan, megatron, llmc"
        " (docs/trainer-logs.md); auto picks by file name and content",
    )
    source: str | None = option(
        None,
        doc="text formats: where the lines are: stdout (the default), stderr, or a glob of a file relative to the"
        " output dir; with stages, each stage reads its own stdout or stderr",
        example="stdout",
    )
    patterns: list[str] = option(
        factory=list,
        doc="text formats: regular expressions searched in each line (ANSI colour codes stripped); each named group"
        " is a record key, the loss's named as loss_key; a `step` group gives the step, else the n-th line a"
        " pattern matches is step n; with a preset, added to its own (an eval line). Every group must match"
        " somewhere in the log",
        example=[r"iter (?P<step>\d+): loss (?P<loss>\S+)"],
    )
    loss_key: str = option(
        "loss", doc="record key of the training loss (for tensorboard: the scalar's tag, e.g. train/loss)"
    )
    step_key: str | None = option(
        None,
        doc="record key of the step (default: global_step for forgather, step for the others; tensorboard takes"
        " each event's step)",
    )

    TENSORBOARD_MISSING = (
        "reading TensorBoard event files needs the tensorboard package: pip install tensorboard"
        " (or the harness's tensorboard extra)"
    )
    PRESETS = ("nanogpt", "torchtitan", "megatron", "llmc")
    STREAMS = ("stdout", "stderr")

    @property
    def is_text(self) -> bool:
        return self.format == "text" or self.format in self.PRESETS

    def on_streams(self, stdout: str, stderr: str) -> LogSpec:
        """This log with a stdout or stderr source naming the file a run's stream is written to (a stage's own)."""
        if not self.is_text or (self.source or "stdout") not in self.STREAMS:
            return self
        return replace(self, source=stdout if (self.source or "stdout") == "stdout" else stderr)

    def check(self) -> Iterable[tuple[str, str]]:
        if self.path is not None and (why := path_problem(self.path, "the output dir")):
            yield "path", why
        if self.is_text:
            yield from self._text_problems()
        else:
            for name in ("source", "patterns"):
                if getattr(self, name):
                    yield name, f"only the text formats (text, {', '.join(self.PRESETS)}) read {name}"
        if self.format == "tensorboard":
            if self.step_key is not None:
                yield "step_key", "tensorboard logs take the step from each event; remove step_key"
            # Looked up, not imported: validating specs stays fast.
            import importlib.util

            if importlib.util.find_spec("tensorboard") is None:
                yield "format", self.TENSORBOARD_MISSING

    def _text_problems(self) -> Iterable[tuple[str, str]]:
        if self.path is not None:
            yield "path", "a text log is read from `source` (stdout, stderr or a glob of a file); give source instead"
        if self.source is not None and self.source not in self.STREAMS:
            if why := relative_inside(self.source, "the output dir"):
                yield "source", why
        if self.format == "text" and not self.patterns:
            yield (
                "patterns",
                "format text needs patterns: regular expressions whose named groups are the numbers,"
                r" e.g. 'loss (?P<loss>\S+)'; `python -m harness logs sniff FILE` proposes some",
            )
        groups: set[str] = set()
        for index, pattern in enumerate(self.patterns):
            if why := regex_problem(pattern):
                yield f"patterns[{index}]", why
                return
            groups.update(re.compile(pattern).groupindex)
        if self.format == "text" and self.patterns and self.loss_key not in groups:
            yield (
                "patterns",
                f"no pattern has a group named {self.loss_key!r} (loss_key): name the loss (?P<{self.loss_key}>...)"
                f" or set loss_key to one of {sorted(groups)}",
            )


@dataclass(frozen=True)
class LossSpec:
    final_max: float | None = option(None, doc="the last logged loss must be at most this", example=2.5)
    final_min: float | None = option(
        None, doc="the last logged loss must be at least this (a run that scores impossibly well is suspect)"
    )
    no_nan: bool = option(True, doc="fail when any logged loss is NaN, inf or missing")
    must_decrease: bool = option(False, doc="the last logged loss must be lower than the first")
    resume_jump_max: float | None = option(
        None,
        doc="in a stage after the first: its first logged loss must lie within this fraction of the last loss "
        "the stage before it logged (a resume that restarted from scratch jumps back up)",
        minimum=0,
        exclusive_minimum=True,
        example=0.2,
    )

    def check(self) -> Iterable[tuple[str, str]]:
        if self.final_min is not None and self.final_max is not None and self.final_min > self.final_max:
            yield (
                "final_min",
                f"final_min ({self.final_min}) is greater than final_max ({self.final_max}): no loss can pass",
            )


@dataclass(frozen=True)
class MetricBound:
    min: float | None = option(None, doc="lower bound")
    max: float | None = option(None, doc="upper bound")
    at: Literal["every", "final", "mean"] = option(
        "every", doc="what is bounded: every logged value, the last one, or their mean"
    )

    def check(self) -> Iterable[tuple[str, str]]:
        if self.min is None and self.max is None:
            yield "max", "give min, max or both"
        elif self.min is not None and self.max is not None and self.min > self.max:
            yield "min", f"min ({self.min}) is greater than max ({self.max}): no value can pass"


@dataclass(frozen=True)
class BaselineSpec:
    """How far a run may fall behind a stored baseline run (`run --baseline PATH`) before it is flagged.

    Each metric has a relative tolerance (a fraction: 0.1 lets the value grow by 10 % over the
    baseline's) and an absolute one (`<metric>_abs`, in the metric's units); a value within
    either passes, so a tiny loss is not held to a tiny fraction of itself. The loss curve is
    compared step by step the same way, with a fraction of steps allowed outside. Lower is
    better for all of them, so only growth is a regression.
    """

    final_loss: float = option(0.10, doc="allowed relative rise of the final loss", minimum=0)
    final_loss_abs: float = option(
        0.0, doc="allowed absolute rise of the final loss; a final loss within this or `final_loss` passes", minimum=0
    )
    perplexity: float = option(0.25, doc="allowed relative rise of the worst completion's perplexity", minimum=0)
    perplexity_abs: float = option(0.0, doc="allowed absolute rise of the worst completion's perplexity", minimum=0)
    duration: float = option(0.50, doc="allowed relative rise of the run's duration", minimum=0)
    duration_abs: float = option(0.0, doc="allowed absolute rise of the run's duration, in seconds", minimum=0)
    curve: float = option(
        0.05, doc="allowed relative rise of the loss at each step of the baseline's loss curve", minimum=0
    )
    curve_abs: float = option(
        0.0, doc="allowed absolute rise of the loss at each step; a step within this or `curve` passes", minimum=0
    )
    curve_fraction: float = option(
        0.01,
        doc="fraction of the baseline's steps that may lie above both (or be missing) before the curve is a regression",
        minimum=0,
        maximum=1,
    )
    severity: Literal["fail", "warn"] = option(
        "fail", doc="what a final loss, perplexity or loss curve regression does to the spec"
    )
    duration_severity: Literal["fail", "warn"] = option(
        "warn", doc="what a duration regression does (timings are noisy, so a warning by default)"
    )


@dataclass(frozen=True)
class StderrSpec:
    forbidden_patterns: list[str] = option(
        factory=lambda: ["Traceback (most recent call last)"],
        doc="the spec fails if stderr contains any of these (substrings; `re:` starts a regular expression)",
    )
    warn_patterns: list[str] = option(factory=list, doc="a pytest warning is raised if stderr contains any of these")

    def check(self) -> Iterable[tuple[str, str]]:
        for name in ("forbidden_patterns", "warn_patterns"):
            if why := patterns_problem(getattr(self, name)):
                yield name, why


@dataclass(frozen=True)
class InferenceSpec:
    server: list[str] | str | None = option(
        None,
        doc="command that serves the checkpoint over HTTP (placeholders {checkpoint_dir}, {port}, {python}, "
        "{output_dir}), or `builtin`: the harness serves any Hugging Face causal-LM checkpoint itself "
        "(`python -m harness serve`); forgather profile default: Forgather's tools/inference_server/server.py",
    )
    checkpoint: str = option("checkpoint", doc="checkpoint directory the server loads, relative to the output dir")
    prompt: str | list[str] = option("Once upon a time", doc="one prompt, or a list of prompts")
    max_tokens: int = option(50, doc="tokens to generate per prompt", minimum=1)
    temperature: float = option(0.7, doc="sampling temperature", minimum=0)
    perplexity_max: float = option(
        500.0,
        doc="the perplexity of prompt + completion under the scorer must be at most this",
        minimum=0,
        exclusive_minimum=True,
    )
    server_timeout: float = option(
        60, doc="seconds to wait for the server to become healthy", minimum=0, exclusive_minimum=True
    )
    scorer: str | None = option(
        None,
        doc="reference model that scores the text: a name in the local Hugging Face cache or a path (default: "
        "the harness setting, gpt2)",
    )

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def check(self) -> Iterable[tuple[str, str]]:
        if not self.prompts:
            yield "prompt", "give at least one prompt"
        if why := relative_inside(self.checkpoint, "the output dir"):
            yield "checkpoint", why
        if isinstance(self.server, list):
            yield from process_problems(self.server, {}, "server")
        elif self.server is not None:
            yield from process_problems([self.server], {}, "server")


@dataclass(frozen=True)
class StageSpec:
    """One step of a spec in stages (train, interrupt, resume, finalize)."""

    id: str = option(
        doc="the stage's name, unique in the spec; it leads the failure message and names its stdout/stderr files",
        example="train",
    )
    command: list[str] | str = option(
        doc="argv of the stage (a string is split shell-style); the spec's placeholders",
        example=["{python}", "train.py", "--output-dir", "{output_dir}"],
    )
    args: dict[str, Any] = option(
        factory=dict, doc="appended to the stage's command as `--key value`, as the spec's `args`"
    )
    args_style: ArgsStyle | None = option(None, doc="how the stage's args are written (default: the spec's)")
    env: dict[str, str | int | float] = option(factory=dict, doc="environment added to the spec's `env` for this stage")
    timeout: float | None = option(
        None, doc="seconds for this stage (default: the spec's timeout)", minimum=0, exclusive_minimum=True
    )
    launcher: Literal["none", "torchrun"] | None = option(None, doc="none or torchrun (default: the spec's launcher)")
    interrupt_at_step: int | None = option(
        None,
        doc="stop the stage (SIGTERM to its process group, SIGKILL 5 s later) once its log shows this step; a "
        "stage stopped so counts as stopped as planned, and its checks apply to what it logged",
        minimum=1,
        example=50,
    )
    log: LogSpec | None = option(None, doc="the stage's training log, as the spec's `log` (default: the spec's)")
    loss: LossSpec | None = option(
        None, doc="bounds on the stage's loss, as the spec's `loss` (with `resume_jump_max`)"
    )
    metrics: dict[str, MetricBound] = option(factory=dict, doc="bounds on the stage's other logged metrics")
    stderr: StderrSpec | None = option(None, doc="the stage's stderr patterns (default: the spec's `stderr`)")
    expected_files: list[str] | None = option(
        None, doc="globs that must match files in the output dir once the stage ends"
    )
    min_steps_logged: int = option(
        1, doc="at least this many entries in the stage's log; 0 with no loss block means no log is needed", minimum=0
    )
    parity: StageParitySpec | None = option(
        None,
        doc="this stage's curve must equal an earlier stage's over the steps both logged: a resumed tail against"
        " an uninterrupted run ([parity](parity.md))",
    )

    def check(self) -> Iterable[tuple[str, str]]:
        if not self.argv_template:
            yield "command", "required: the argv list (or a string) of the stage"
        yield from run_problems(self.id, self.expected_files, self.args, self.args_style)
        yield from process_problems(self.argv_template, self.env)

    @property
    def argv_template(self) -> list[str]:
        return split_command(self.command) if isinstance(self.command, str) else list(self.command)


@dataclass(frozen=True)
class FinalizeSpec:
    """Forgather profile: `forgather finalize` the trained model before it is served."""

    quantize: str = option(
        doc="the recipe passed as `forgather finalize SRC DEST --quantize RECIPE`; the server loads DEST",
        example="int8",
    )
