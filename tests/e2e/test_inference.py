"""The inference stage: the perplexity gate discriminates, and every way serving fails is reported."""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

import pytest
import yaml

from harness.inference import perplexity

from ..conftest import REPO
from .common import serve, serving_spec

pytestmark = pytest.mark.e2e


def random_words(count: int, seed: int = 0) -> str:
    """Word salad from the corpus's own vocabulary: every token known, no grammar."""
    sys.path.insert(0, str(REPO / "examples" / "tinylm"))
    import corpus

    vocabulary = sorted({word for sentence in corpus.generate_sentences(200) for word in sentence.split()})
    rng = random.Random(seed)
    return " ".join(rng.choice(vocabulary) for _ in range(count))


def held_out_corpus(count: int) -> str:
    """Sentences from the corpus's grammar under another seed, joined as training joins them."""
    sys.path.insert(0, str(REPO / "examples" / "tinylm"))
    import corpus

    return " <eos> ".join(corpus.generate_sentences(count, seed=99))


def test_gate_ranks_corpus_below_output_below_ceiling_below_random(
    harness, tinylm_scorer: str, record_property
) -> None:
    """The four numbers of the issue: perplexity(corpus) < perplexity(output) < ceiling < perplexity(random)."""
    run = harness("run", "-k", "tinylm_inference", "--scorer", tinylm_scorer)
    assert run.code == 0, run.output
    spec = run.spec("tinylm_inference")
    ceiling = yaml.safe_load((REPO / "specs" / "tinylm_inference.yaml").read_text())["inference"]["perplexity_max"]
    output = spec["perplexity"]  # the worst of the spec's completions, as the gate judges
    corpus_text = perplexity.perplexity(tinylm_scorer, held_out_corpus(8))
    salad = perplexity.perplexity(tinylm_scorer, random_words(30))
    for name, value in {"corpus": corpus_text, "output": output, "ceiling": ceiling, "random": salad}.items():
        record_property(f"perplexity_{name}", value)
    print(f"perplexity: corpus {corpus_text:.3g} < output {output:.3g} < ceiling {ceiling:g} < random {salad:.3g}")
    assert corpus_text < output < ceiling < salad
    assert all(c["text"].strip() for c in spec["inference"])


def test_server_that_never_becomes_healthy(harness, tinylm_scorer: str, tmp_path: Path) -> None:
    started = time.monotonic()
    spec, _ = serve(harness, tinylm_scorer, tmp_path, "never-healthy", server_timeout=2)
    elapsed = time.monotonic() - started
    assert "not healthy within 2 s" in spec["reason"]
    assert elapsed < 2 + 15, f"the harness took {elapsed:.1f} s past a 2 s server_timeout"


def test_server_that_crashes_on_the_request(harness, tinylm_scorer: str, tmp_path: Path) -> None:
    spec, output = serve(harness, tinylm_scorer, tmp_path, "crash")
    assert spec["reason"].startswith("inference.completion: ConnectionError")
    assert "the server exited with code 3" in output and "crashing on request" in output


def test_empty_completion_fails(harness, tinylm_scorer: str, tmp_path: Path) -> None:
    spec, _ = serve(harness, tinylm_scorer, tmp_path, "empty")
    assert spec["reason"] == "inference.completion: an empty completion"
    assert spec["inference"] == [{"prompt": "the small cat", "text": "", "perplexity": None}]


def test_missing_checkpoint_fails_before_serving(harness, tinylm_scorer: str, tmp_path: Path) -> None:
    spec, _ = serve(harness, tinylm_scorer, tmp_path, "ok", training="pass")
    assert "expected_files" in spec["reason"] and "checkpoint/config.json" in spec["reason"]
    assert "inference stage not run: the training failed" in spec["warnings"]
    assert not Path(spec["output_dir"], "server.stdout.log").exists()


def test_a_fake_server_passes_the_gate(harness, tinylm_scorer: str, tmp_path: Path) -> None:
    """The control for the cases above: the same spec with a well-behaved server passes."""
    spec, _ = serve(harness, tinylm_scorer, tmp_path, "ok", code=0)
    assert spec["inference"][0]["text"] == " sleeps ."


def test_missing_scorer_fails_with_directions_or_skips_on_request(harness, tmp_path: Path) -> None:
    path, _ = serving_spec(tmp_path, "ok")
    missing = tmp_path / "no-such-scorer"
    failed = harness("run", str(path), "--scorer", str(missing))
    assert failed.code == 1, failed.output
    reason = failed.spec("serve_ok")["checks"]
    message = next(c for c in reason if c["name"] == "inference.scorer")["found"]
    assert str(missing) in message and "--scorer PATH" in message and "TRAINSPEC_SCORER" in message
    skipped = harness("run", str(path), "--scorer", str(missing), "--missing-scorer", "skip")
    assert skipped.code == 0, skipped.output
    assert any(w.startswith("inference stage skipped") for w in skipped.spec("serve_ok")["warnings"])
