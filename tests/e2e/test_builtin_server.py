"""`inference.server: builtin`: the harness serves a save_pretrained checkpoint itself."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.e2e

SPEC = {
    "id": "builtin_server",
    "gpus": 0,
    "timeout": 300,
    "command": [
        "{python}",
        "examples/tinylm/train.py",
        "--output-dir",
        "{output_dir}",
        "--max-steps",
        "100",
        "--save-model",
    ],
    "expected_files": ["checkpoint/config.json"],
    "loss": {"final_max": 1.5},
    "inference": {
        "server": "builtin",
        "prompt": ["the small cat", "a happy dog"],
        "max_tokens": 20,
        "perplexity_max": 10,
    },
}


def test_builtin_server_serves_a_save_pretrained_checkpoint(harness, tinylm_scorer: str, tmp_path: Path) -> None:
    spec = tmp_path / "builtin.yaml"
    spec.write_text(yaml.safe_dump(SPEC, sort_keys=False))
    first = harness("run", str(spec), "--scorer", tinylm_scorer)
    assert first.code == 0, first.output
    record = first.spec("builtin_server")
    assert isinstance(record["perplexity"], float) and record["perplexity"] <= 10
    assert all(c["text"].strip() for c in record["inference"])
    # Deterministic per request: the same spec served again answers with the same text.
    again = harness("run", str(spec), "--scorer", tinylm_scorer)
    assert [c["text"] for c in again.spec("builtin_server")["inference"]] == [c["text"] for c in record["inference"]]
