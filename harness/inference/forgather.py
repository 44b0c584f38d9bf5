"""What the forgather profile knows of a Forgather repository: its inference server, where a
training leaves the model, and the finalize step that quantizes it.

These are the facts Forgather's own integration suite relies on, so its spec files run
unchanged: the suite serves a model with `tools/inference_server/server.py` started from the
repository root, and finds the model in the training's output dir.
"""

from __future__ import annotations

from pathlib import Path

from harness.spec.model import Spec
from harness.spec.sections import StageSpec

SERVER = [
    "{python}",
    "tools/inference_server/server.py",
    "--model",
    "{checkpoint_dir}",
    "--from-checkpoint",
    "--host",
    "127.0.0.1",
    "--port",
    "{port}",
    "--log-level",
    "WARNING",
]
FINALIZED = "finalized"


def model_dir(output_dir: Path) -> Path | None:
    """The output dir itself when it holds config.json, else its first subdirectory (by name) that does."""
    if (output_dir / "config.json").is_file():
        return output_dir
    return (
        next((d for d in sorted(output_dir.iterdir()) if d.is_dir() and (d / "config.json").is_file()), None)
        if output_dir.is_dir()
        else None
    )


def checkpoint(spec: Spec, output_dir: Path) -> Path:
    """The directory a forgather spec's server loads: the finalized model when the spec finalizes, else the trained
    one."""
    if spec.finalize is not None:
        return output_dir / FINALIZED
    fallback = output_dir / (spec.inference.checkpoint if spec.inference else "")
    return model_dir(output_dir) or fallback


def finalize_stage(spec: Spec, output_dir: Path) -> StageSpec:
    """`forgather finalize SRC DEST --quantize RECIPE`, SRC found once the training has run."""
    assert spec.finalize is not None
    source = model_dir(output_dir) or output_dir
    command = ["forgather", "finalize", str(source), str(output_dir / FINALIZED), "--quantize", spec.finalize.quantize]
    return StageSpec(
        id="finalize",
        command=command,
        min_steps_logged=0,
        expected_files=[f"{FINALIZED}/config.json"],
        stderr=spec.stderr,
    )
