"""The spec: one YAML file per scenario, loaded into frozen dataclasses.

A block per dataclass, the defaults in one place (the `option(...)` of each field), and
runner profiles for spec files written for other suites (Forgather's `project_dir` +
`config`), which load unchanged.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from harness.spec.parity import ParitySpec, ReproducibleSpec
from harness.spec.rules import (
    flat_args,
    memory_problem,
    path_problem,
    placeholder_problem,
    process_problems,
    relative_inside,
    run_problems,
    split_command,
)
from harness.spec.sections import (
    ArgsStyle,
    BaselineSpec,
    FinalizeSpec,
    InferenceSpec,
    LogSpec,
    LossSpec,
    MetricBound,
    StageSpec,
    StderrSpec,
)
from harness.spec.typed_yaml import option

# Why a run failed, decided from evidence by harness.checks.failure_kind: the machine, the trainer's code,
# the numbers, time, or the harness itself. Here, at the bottom, because a spec names kinds in `retry_on`.
FailureKind = Literal["infra", "code", "numeric", "timeout", "harness"]
FAILURE_KINDS: tuple[str, ...] = FailureKind.__args__  # type: ignore[attr-defined]
# Failures a rerun can fix; a numeric one rerun until it passes is a regression hidden.
RETRIED_BY_DEFAULT = ("infra", "timeout")

TIER_MARKERS = {"smoke": ("smoke", "integration"), "standard": ("integration",), "full": ("integration", "slow")}
BUILTIN_MARKERS = {
    "smoke": "the fastest specs: run on every change (tier smoke)",
    "integration": "a trainspec spec of the smoke or standard tier",
    "slow": "a spec that runs only in the full tier",
}
PLACEHOLDERS = {
    "python": "the Python interpreter running the harness (the session's venv)",
    "output_dir": "this spec's output directory inside the run directory",
    "run_dir": "the run directory",
    "repo": "the repository root",
    "gpus": "how many devices the run holds (on each node)",
    "nodes": "how many nodes the run spans",
}
SERVER_PLACEHOLDERS = {
    **PLACEHOLDERS,
    "checkpoint_dir": "the checkpoint directory the server loads",
    "port": "a free loopback port for the server",
}
SPEC_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Spec:
    """One scenario: a command to run and what its run must show."""

    id: str = option(
        doc="unique id; the pytest test id (letters, digits, '_', '.', '-'; at most 128 characters: it names folders)",
        aliases=("test_id",),
        example="tinylm_smoke",
    )
    command: list[str] | str | None = option(
        None,
        doc="argv of the run (a string is split shell-style); placeholders {python}, {output_dir}, {run_dir}, "
        "{repo}, {gpus}. With launcher torchrun: the script and its arguments",
        example=["{python}", "train.py", "--output-dir", "{output_dir}"],
    )
    cwd: str = option(".", doc="where the command runs, relative to the repository root (projects run in place)")
    args: dict[str, Any] = option(
        factory=dict,
        doc="appended to the command as `--key value` (underscores become dashes; true is a bare flag; false and "
        "null are left out; a list repeats values)",
        aliases=("dynamic_args",),
        example={"max_steps": 60},
    )
    args_style: ArgsStyle = option(
        "dashes",
        doc="how args are written: dashes `--max-steps 60` (argparse), equals `--max_steps=60` (absl, nanoGPT's"
        " configurator: underscores kept, true and false written True and False), hydra `max_steps=60` (Hydra,"
        " OmegaConf: a nested mapping becomes `optim.lr=0.1`)",
    )
    env: dict[str, str | int | float] = option(factory=dict, doc="extra environment variables for the run")
    launcher: Literal["none", "torchrun"] = option(
        "none", doc="torchrun starts one rank per device held (gloo on CPU, nccl on GPU)"
    )
    gpus: int = option(
        1, doc="devices the run needs (on each node); 0 for a CPU-only spec", aliases=("gpu_requirement",), minimum=0
    )
    nodes: int = option(
        1,
        doc="nodes the run spans: more than 1 runs one torchrun per node, joined through the allocation's "
        "rendezvous, so it needs launcher torchrun and a backend that runs across nodes (listed by `python "
        "-m harness run --help`)",
        minimum=1,
    )
    gpu_memory: str | None = option(
        None,
        doc="memory the run needs on each of its devices (`6GiB`, `512MiB`, `24GB`), so runs whose memory fits "
        "share a device; `auto`: the peak recorded on real GPUs plus the headroom (held whole until one is "
        "recorded); absent: the devices are held whole",
        example="6GiB",
    )
    cpu_ok: bool = option(
        False, doc="the run is valid on CPU, so it runs where no GPU is present (and under --fake-gpus)"
    )
    retries: int = option(
        0,
        doc=(
            "run a failed spec again up to this many times, when its failure is of a kind in `retry_on`; "
            "a pass after a failure is reported as flaky, with the kind it recovered from, every attempt kept"
        ),
        minimum=0,
    )
    retry_on: list[FailureKind] = option(
        factory=lambda: list(RETRIED_BY_DEFAULT),
        doc=(
            "the failure kinds `retries` reruns: infra (the machine: device out of memory, lost device, collective "
            "timeout, port in use, full disk, failed node, OOM killer), timeout, code, numeric (NaN, a loss, metric, "
            "curve or perplexity bound), harness. Default: infra and timeout, so a retry never turns a numeric "
            "regression green"
        ),
        example=["infra", "timeout"],
    )
    timeout: float = option(
        300,
        doc="seconds for the whole spec, its inference included; past it the run's process group is killed (the"
        " inference stage gets what the training left)",
        minimum=0,
        exclusive_minimum=True,
    )
    fail_fast: bool = option(
        True,
        doc="stop the run's process group as soon as its stderr shows a forbidden pattern (after 5 s, if it has "
        "not exited by itself) or its training log a NaN, inf or missing loss (with loss.no_nan); the failed "
        "check fail_fast names the line or step",
    )
    tier: Literal["smoke", "standard", "full"] | None = option(
        None, doc="smoke, standard or full (default: smoke if marked smoke, full if marked slow, else standard)"
    )
    markers: list[str] = option(factory=list, doc="extra pytest markers (registered in pyproject.toml; strict)")
    log: LogSpec = option(factory=LogSpec, doc="where the training log is and how to read it")
    loss: LossSpec | None = option(None, doc="bounds on the training loss")
    metrics: dict[str, MetricBound] = option(
        factory=dict, doc="bounds on other logged metrics, by record key", example={"grad_norm": {"max": 10}}
    )
    stderr: StderrSpec = option(factory=StderrSpec, doc="patterns that fail the spec or warn when stderr contains them")
    expected_files: list[str] | None = option(
        None,
        doc="globs that must match files in the output dir; a name without `/` matches at any depth (default: "
        "none; forgather profile: trainer_logs.json)",
    )
    min_steps_logged: int = option(
        1, doc="at least this many training log entries; 0 with no loss block means no log is needed", minimum=0
    )
    stages: list[StageSpec] | None = option(
        None,
        doc="instead of `command`: stages run in order in one output dir on the same devices, each with its own "
        "command and checks; the first that fails ends the spec",
    )
    inference: InferenceSpec | None = option(
        None, doc="serve the trained checkpoint and score completions (full tier); runs after the last stage"
    )
    finalize: FinalizeSpec | None = option(
        None, doc="forgather profile: a finalize stage run after training, whose output the inference server loads"
    )
    baseline: BaselineSpec = option(
        factory=BaselineSpec, doc="tolerances against a stored run given with `run --baseline PATH`"
    )
    watch: list[str] = option(
        factory=list,
        doc="globs (relative to the repository root; `**` crosses folders) of files the run depends on that "
        "tracing cannot see, such as a shell script it runs or a C extension's sources; they count for "
        "--changed-since and --skip-unchanged",
        example=["scripts/*.sh", "csrc/**"],
    )
    parity: ParitySpec | list[ParitySpec] | None = option(
        None,
        doc="this spec's curve must equal another spec's, step by step (a list for several); the plan keeps both"
        " in one run, and the comparison fails this spec ([parity](parity.md))",
        example={"spec": "tinylm_accum", "rtol": 1e-6},
    )
    repeat: int = option(
        1,
        doc="run the spec this many times, each its own run and record (ids ID, ID@2, ...), on other devices"
        " where there are",
        minimum=1,
    )
    reproducible: ReproducibleSpec | None = option(
        None, doc="with repeat: every repeat's curve must equal the first run's, step by step ([parity](parity.md))"
    )
    profile: Literal["command", "forgather"] | None = option(
        None,
        doc="how the command is built: command (default) or forgather (default when project_dir and config are given)",
    )
    project_dir: str | None = option(
        None, doc="forgather profile: the project directory, relative to the repository root"
    )
    config: str | None = option(None, doc="forgather profile: the training config template")

    source: Path = field(default=Path("<spec>"), compare=False)
    line: int | None = field(default=None, compare=False)
    key_lines: dict[str, int] = field(default_factory=dict, compare=False)

    def check(self) -> Iterable[tuple[str, str]]:
        yield from run_problems(self.id, self.expected_files, self.args, self.args_style)
        yield from process_problems(self.argv_template, self.env)
        if self.profile == "forgather":
            for name in ("project_dir", "config"):
                if getattr(self, name) is None:
                    yield name, "the forgather profile needs project_dir and config"
            if self.command is not None:
                yield (
                    "command",
                    "the forgather profile builds the command from project_dir and config; give one or the other",
                )
        else:
            for name in ("project_dir", "config"):
                if getattr(self, name) is not None:
                    yield name, "only the forgather profile reads project_dir and config"
            if self.stages is not None and self.command is not None:
                yield "stages", "give command or stages, not both"
            elif self.stages is None and (self.command is None or not self.argv_template):
                yield "command", "required: the argv list (or a string) of the run, or stages"
            if self.finalize is not None:
                yield "finalize", "only the forgather profile reads finalize; give a stage instead"
        if self.tier is not None:
            for marker, tiers in (("smoke", ("smoke",)), ("slow", ("full",))):
                if marker in self.markers and self.tier not in tiers:
                    yield (
                        "tier",
                        f"tier {self.tier!r} contradicts the marker {marker!r} (which means tier "
                        f"{tiers[0]!r}); keep one",
                    )
        if why := relative_inside(self.cwd, "the repository"):
            yield "cwd", why
        if self.gpu_memory is not None and (why := memory_problem(self.gpu_memory)):
            yield "gpu_memory", why
        if self.project_dir is not None and (why := relative_inside(self.project_dir, "the repository")):
            yield "project_dir", why
        for pattern in self.watch:
            if why := path_problem(pattern, "the repository"):
                yield "watch", why
        for name, word, known in self._placeholder_words():
            if why := placeholder_problem(word, known):
                yield name, why
        if self.nodes > 1 and self.launcher != "torchrun":
            yield (
                "nodes",
                f"a run across {self.nodes} nodes needs launcher: torchrun, whose ranks join through the "
                "allocation's rendezvous",
            )
        if self.launcher == "torchrun" and self.profile == "forgather":
            yield "launcher", "forgather starts its own ranks; leave launcher at none"
        if self.inference is not None:
            yield from self._inference_problems(self.inference)
        yield from self._stage_problems()
        yield from self._parity_problems()

    def _parity_problems(self) -> Iterable[tuple[str, str]]:
        for index, parity in enumerate(self.parities):
            if parity.spec == self.id:
                where = f"parity[{index}].spec" if isinstance(self.parity, list) else "parity.spec"
                yield where, f"a spec cannot be compared with itself ({self.id!r}); for repeats: repeat, reproducible"
        if self.reproducible is not None and self.repeat < 2:
            yield "reproducible", "compares the repeats of a spec: set repeat to 2 or more"
        seen: dict[str, int] = {}
        for index, stage in enumerate(self.stages or ()):
            seen[stage.id] = index
            if stage.parity is None:
                continue
            if stage.parity.stage == stage.id:
                yield f"stages[{index}].parity.stage", f"a stage cannot be compared with itself ({stage.id!r})"
            elif stage.parity.stage not in seen:
                later = any(s.id == stage.parity.stage for s in self.stages or ())
                why = "runs after this stage; compare with a stage before it" if later else "is no stage of this spec"
                yield f"stages[{index}].parity.stage", f"{stage.parity.stage!r} {why}"

    def _stage_problems(self) -> Iterable[tuple[str, str]]:
        """Stages need names of their own, something to resume, and the checks in the stage they apply to."""
        if self.stages is None:
            if self.loss is not None and self.loss.resume_jump_max is not None:
                yield "loss.resume_jump_max", "compares a stage with the stage before it; it needs stages"
            return
        if self.profile == "forgather":
            yield "stages", "the forgather profile builds its own stages (train, and finalize when given)"
        if not self.stages:
            yield "stages", "give at least one stage"
            return
        for name in ("args", "loss", "metrics", "expected_files"):
            if getattr(self, name):
                yield name, f"with stages, give {name} in the stage it applies to"
        seen: dict[str, int] = {}
        for index, stage in enumerate(self.stages):
            if stage.id in seen:
                yield f"stages[{index}].id", f"duplicate stage id {stage.id!r}, also stages[{seen[stage.id]}]"
            seen.setdefault(stage.id, index)
        if self.stages[-1].interrupt_at_step is not None:
            yield (
                f"stages[{len(self.stages) - 1}].interrupt_at_step",
                "the last stage cannot be interrupted: no stage after it resumes the run",
            )
        first = self.stages[0].loss
        if first is not None and first.resume_jump_max is not None:
            yield "stages[0].loss.resume_jump_max", "the first stage has no stage before it to resume from"

    def _inference_problems(self, inference: InferenceSpec) -> Iterable[tuple[str, str]]:
        """An inference stage needs a checkpoint that the training is known to save."""
        if self.profile == "forgather":
            if str(self.args.get("save_strategy", "no")) == "no":
                yield (
                    "inference",
                    "inference needs a saved checkpoint: set dynamic_args.save_strategy (for example "
                    '"steps"), not "no"',
                )
            return
        if inference.server is None:
            yield "inference", "give inference.server: the command that serves the checkpoint"
        prefix = inference.checkpoint.rstrip("/") + "/"
        expected = [
            *(self.expected_files or ()),
            *(p for stage in self.stages or () for p in stage.expected_files or ()),
        ]
        if inference.server is not None and not any(pattern.startswith(prefix) for pattern in expected):
            yield (
                "inference",
                "inference needs the checkpoint the training saves: list a file of it in expected_files "
                f"(for example '{prefix}config.json')",
            )

    def _placeholder_words(self) -> Iterable[tuple[str, str, dict[str, str]]]:
        server = self.inference.server if self.inference else None
        server_parts = server if isinstance(server, list) else split_command(server) if server else []
        texts = [("command", part, PLACEHOLDERS) for part in self.argv_template]
        for index, stage in enumerate(self.stages or ()):
            texts += [(f"stages[{index}].command", part, PLACEHOLDERS) for part in stage.argv_template]
            texts += [(f"stages[{index}].args", str(v), PLACEHOLDERS) for v in flat_args(stage.args).values()]
            texts += [(f"stages[{index}].env", str(v), PLACEHOLDERS) for v in stage.env.values()]
        texts += [("args", str(v), PLACEHOLDERS) for v in flat_args(self.args).values()]
        texts += [("env", str(v), PLACEHOLDERS) for v in self.env.values()]
        texts += [("inference.server", part, SERVER_PLACEHOLDERS) for part in server_parts]
        for name, text, known in texts:
            try:
                for _, word, spec, conversion in string.Formatter().parse(text):
                    if word is not None:
                        yield (
                            name,
                            word + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else ""),
                            known,
                        )
            except ValueError as error:
                yield name, f"<{error}>", known

    @property
    def argv_template(self) -> list[str]:
        return split_command(self.command) if isinstance(self.command, str) else list(self.command or ())

    @property
    def parities(self) -> list[ParitySpec]:
        """The parity blocks as a list (one block may be given bare)."""
        if self.parity is None:
            return []
        return list(self.parity) if isinstance(self.parity, list) else [self.parity]

    @property
    def effective_tier(self) -> str:
        if self.tier is not None:
            return self.tier
        if "smoke" in self.markers:
            return "smoke"
        return "full" if "slow" in self.markers else "standard"

    @property
    def all_markers(self) -> list[str]:
        """The tier's markers first, then the spec's own, without repeats."""
        return list(dict.fromkeys([*TIER_MARKERS[self.effective_tier], *self.markers]))

    @property
    def needs_log(self) -> bool:
        return self.loss is not None or bool(self.metrics) or self.min_steps_logged > 0
