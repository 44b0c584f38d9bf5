"""Train a reference tinylm that scores the perplexity of generated text.

trainspec's inference stage scores prompt + completion under a reference
model (`--scorer PATH`). Scoring tinylm's output with gpt2 would measure how
English-like a toy grammar is; a model trained on the same corpus measures
whether the served checkpoint learned that grammar. The scorer is train.py's
model with another seed and more steps, so it sits near the grammar's entropy
without sharing the served model's init or data order.

    python examples/tinylm/build_scorer.py --output DIR [--steps N] [--seed S] [--force]

DIR appears whole or not at all: training goes to DIR.tmp-<pid>, and the
finished scorer is renamed into place, so a concurrent reader or builder never
sees half a model. An existing scorer is kept unless --force.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

# The sibling modules are imported by name, so the script works from any cwd
# without being installed.
sys.path.insert(0, str(Path(__file__).resolve().parent))

import train
import train_args
from transformers import AutoModelForCausalLM, AutoTokenizer


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; the defaults take about 15 s on two CPU threads."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--output", type=Path, required=True, help="scorer folder: model, tokenizer, train_log.jsonl and versions.json"
    )
    parser.add_argument(
        "--steps",
        type=train_args.positive_int,
        default=400,
        help="optimizer steps (default: %(default)s; train.py's 150 stop a little short of the entropy)",
    )
    parser.add_argument(
        "--seed", type=int, default=1, help="weight init and data order (default: %(default)s, unlike train.py's 0)"
    )
    parser.add_argument("--force", action="store_true", help="retrain and replace an existing scorer")
    args = parser.parse_args(argv)
    out = args.output
    if out.exists() and not is_scorer(out) and (not out.is_dir() or any(out.iterdir())):
        parser.error(f"{out} is neither a scorer (no config.json) nor an empty folder; not touching it")
    return args


def is_scorer(path: Path) -> bool:
    """A finished scorer has config.json; DIR only ever appears finished."""
    return (path / "config.json").is_file()


def make_eos_the_bos(folder: Path) -> None:
    """Make <eos> the scorer's bos too, as GPT-2 does with <|endoftext|>.

    Scorers prepend bos. train.py's stream puts <eos> before every sentence
    and never shows <bos>, whose embedding stays at its random init: read
    first, it costs a corpus sentence about 8 nats on its first word and lifts
    its perplexity from about 3 to about 16.
    """
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    tokenizer.bos_token = tokenizer.eos_token
    model.config.bos_token_id = model.generation_config.bos_token_id = tokenizer.eos_token_id
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if is_scorer(args.output) and not args.force:
        print(f"scorer already in {args.output}; not retraining (--force to replace it)", flush=True)
        return
    output = args.output.resolve()
    staging = output.with_name(f"{output.name}.tmp-{os.getpid()}")
    try:
        train.main(
            [
                "--output-dir",
                str(staging),
                "--max-steps",
                str(args.steps),
                "--seed",
                str(args.seed),
                "--log-every",
                "50",
                "--save-model",
            ]
        )
        built = staging / "checkpoint"
        make_eos_the_bos(built)
        # The training log says how good the scorer is; keep it with the model.
        for name in ("train_log.jsonl", "versions.json"):
            (staging / name).rename(built / name)
        if args.force and is_scorer(output):
            # Move the old scorer aside first, so output never holds a mix.
            output.rename(staging / "replaced")
        try:
            built.rename(output)  # replaces an empty folder; fails on a full one
        except OSError:
            if not is_scorer(output):
                raise
            print(f"another build finished {output} first; keeping it", flush=True)
            return
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    print(f"scorer saved to {output}", flush=True)


if __name__ == "__main__":
    main()
