"""A spec rendered into one launch: argv, working directory, environment, output folder, time limit.

What a backend needs to start a run, with no knowledge of where the run happens: the
backend supplies the placement (which devices, which variables tell the child about them)
and this module the rest.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.spec.files import PROFILES
from harness.spec.model import Spec
from harness.spec.rules import flat_args
from harness.trace import TRACE_DIR

# First on every child's PYTHONPATH: its sitecustomize records the versions the child imports.
CHILD_SITE = Path(__file__).with_name("child_site")
CHILD_VERSIONS_FILE = "child_versions.json"


@dataclass(frozen=True)
class Launch:
    """Everything needed to start one run, already rendered."""

    argv: list[str]
    cwd: Path
    env: dict[str, str]
    output_dir: Path
    timeout: float
    spec_id: str = ""
    # What the spec asked for, which a cluster backend requests from its scheduler.
    gpus: int = 0  # devices on each node
    nodes: int = 1
    stage: str = ""  # a spec in stages: each stage's streams are files of their own

    @property
    def stdout_path(self) -> Path:
        return self.output_dir / (f"{self.stage}.stdout.log" if self.stage else "stdout.log")

    @property
    def stderr_path(self) -> Path:
        return self.output_dir / (f"{self.stage}.stderr.log" if self.stage else "stderr.log")


@dataclass(frozen=True)
class Placement:
    """Where a backend puts one run: how many devices it holds (on each node) and the variables that tell the child.

    A variable set to None is removed from the child's environment (a caller's value must not leak in).
    """

    held: int
    env: Mapping[str, str | None] = field(default_factory=dict)


def render(text: str, values: dict[str, str]) -> str:
    return text.format_map(values)


def build_argv(spec: Spec, values: dict[str, str], nproc: int) -> list[str]:
    """The spec's command with placeholders filled and args appended; torchrun in front if asked."""
    template = PROFILES[spec.profile or "command"].build_command(spec)
    argv = [render(part, values) for part in template] + [
        render(part, values) for part in render_args(spec.args, spec.args_style)
    ]
    if spec.launcher == "torchrun":
        if template and template[0] == "{python}":
            argv = argv[1:]
        if spec.nodes > 1:
            # The endpoint is known only inside the allocation: the backend sets it on each node.
            rendezvous = [f"--nnodes={spec.nodes}", "--rdzv-backend=c10d"]
        else:
            # --standalone makes torchrun pick a free rendezvous port, so runs side by side never collide.
            rendezvous = ["--standalone"]
        argv = [sys.executable, "-m", "torch.distributed.run", *rendezvous, f"--nproc-per-node={nproc}", *argv]
    return argv


def placeholder_values(*, repo: Path, run_dir: Path, output_dir: Path, gpus: int, nodes: int = 1) -> dict[str, str]:
    return {
        "python": sys.executable,
        "output_dir": str(output_dir),
        "run_dir": str(run_dir),
        "repo": str(repo),
        "gpus": str(gpus),
        "nodes": str(nodes),
    }


def build_launch(
    spec: Spec,
    *,
    repo: Path,
    run_dir: Path,
    output_dir: Path,
    placement: Placement,
    base_env: Mapping[str, str] | None = None,
) -> Launch:
    """Render a spec into a Launch placed where its backend put it."""
    values = placeholder_values(
        repo=repo, run_dir=run_dir, output_dir=output_dir, gpus=placement.held, nodes=spec.nodes
    )
    env = dict(os.environ if base_env is None else base_env)
    # Defaults a spec's env may override: offline hubs, no bytecode in the tree, unbuffered logs.
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("HF_DATASETS_OFFLINE", "1")
    env.setdefault("PYTHONUNBUFFERED", "1")
    # Bytecode of the project under test would land in its tree; site-packages' is still read.
    env.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    placed = {key: value for key, value in placement.env.items() if value is not None}
    # Thread counts are the placement's defaults; the spec's env may still choose its own.
    env.update({key: value for key, value in placed.items() if key == "OMP_NUM_THREADS"})
    env.update({key: render(str(value), values) for key, value in spec.env.items()})
    env.update({key: value for key, value in placed.items() if key != "OMP_NUM_THREADS"})
    for key in [k for k, v in placement.env.items() if v is None]:
        env.pop(key, None)
    env.update(
        {"TRAINSPEC_SPEC_ID": spec.id, "TRAINSPEC_OUTPUT_DIR": str(output_dir), "TMPDIR": str(output_dir / "tmp")}
    )
    env["TRAINSPEC_VERSIONS_FILE"] = str(output_dir / CHILD_VERSIONS_FILE)
    # The child's sitecustomize records the repository files each process uses (harness.trace reads them).
    env.update({"TRAINSPEC_REPO": str(repo.resolve()), "TRAINSPEC_TRACE_DIR": str(output_dir / TRACE_DIR)})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(CHILD_SITE), env.get("PYTHONPATH")]))
    (output_dir / "tmp").mkdir(parents=True, exist_ok=True)
    nproc = max(1, spec.gpus) if spec.launcher == "torchrun" else 1
    return Launch(
        build_argv(spec, values, nproc), repo / spec.cwd, env, output_dir, spec.timeout, spec.id, spec.gpus, spec.nodes
    )


def render_args(args: dict[str, Any], style: str = "dashes") -> list[str]:
    """`{max_steps: 60, fast: true}` as a style writes it: dashes `--max-steps 60 --fast`, equals
    `--max_steps=60 --fast=True`, hydra `max_steps=60 fast=true` (nested mappings as `a.b=value`).
    null is left out in every style, false too with dashes (a flag not given)."""
    if style == "hydra":
        return [f"{key}={_hydra_text(value)}" for key, value in flat_args(args).items() if value is not None]
    argv: list[str] = []
    for key, value in args.items():
        if value is None or (value is False and style == "dashes"):
            continue
        if style == "equals":
            # absl and nanoGPT's configurator read True/False (literal_eval); lists comma-separated as absl's.
            text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
            argv.append(f"--{key}={text}")
            continue
        flag = "--" + key.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif isinstance(value, list):
            argv += [flag, *(_arg_text(v) for v in value)]
        else:
            argv += [flag, _arg_text(value)]
    return argv


def _arg_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _hydra_text(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ",".join(_hydra_text(v) for v in value) + "]"
    return "null" if value is None else _arg_text(value)
