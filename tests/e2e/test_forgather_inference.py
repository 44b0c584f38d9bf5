"""Forgather's inference specs, unchanged, in a Forgather-shaped repository: stand-ins for
`forgather` (train, finalize) and tools/inference_server/server.py."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ..conftest import forgather_on_path

pytestmark = pytest.mark.e2e

HERE = Path(__file__).parent


def test_forgather_inference_specs_pass_unchanged(harness, tinylm_scorer: str, tmp_path: Path) -> None:
    repo = tmp_path / "forgather"
    (repo / "proj").mkdir(parents=True)
    (repo / "proj" / "train.yaml").write_text("lr: 0.001\n")
    (repo / "tools" / "inference_server").mkdir(parents=True)
    shutil.copy(HERE / "forgather_server_stand_in.py", repo / "tools" / "inference_server" / "server.py")
    (repo / "specs").mkdir()
    for name in ("forgather_inference_spec.yaml", "forgather_quantize_spec.yaml"):
        shutil.copy(HERE / name, repo / "specs" / name)
    bin_dir = forgather_on_path(tmp_path)
    run = harness(
        "run",
        "--gpus",
        "1",
        "--scorer",
        tinylm_scorer,
        cwd=repo,
        env={"PATH": f"{bin_dir}:{os.environ['PATH']}", "CUDA_VISIBLE_DEVICES": "0"},
    )
    assert run.code == 0, run.output

    plain, quantized = run.spec("tiny_inference"), run.spec("tiny_quantized")
    for record in (plain, quantized):
        assert isinstance(record["perplexity"], float) and record["perplexity"] <= 20
    # The model dir rule: the first subdirectory of the output dir holding config.json.
    served = Path(plain["output_dir"], "server.stdout.log").read_text()
    assert served.strip() == f"serving {Path(plain['output_dir'], 'checkpoint-30')}"
    # finalize ran after training, and the server loaded what it wrote.
    assert [s["id"] for s in quantized["stages"]] == ["train", "finalize"]
    finalize = quantized["stages"][1]["command"]
    assert (
        finalize[:2] == ["forgather", "finalize"]
        and finalize[2].endswith("checkpoint-30")
        and finalize[-2:] == ["--quantize", "int8"]
    )
    served = Path(quantized["output_dir"], "server.stdout.log").read_text()
    assert served.strip() == f"serving {Path(quantized['output_dir'], 'finalized')} quantized int8"
