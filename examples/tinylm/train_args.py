"""The command-line flags train.py and train_hf.py share, declared once so their defaults cannot drift apart.

A sibling module imported by name (each script puts this folder on sys.path), so the trainers keep working as
plain scripts and under torchrun from any cwd.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def common_parser(description: str, output_dir_help: str, batch_per: str) -> argparse.ArgumentParser:
    """A parser holding the flags both trainers take; `batch_per` names what one batch is per (rank, device)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--output-dir", type=Path, required=True, help=output_dir_help)
    parser.add_argument(
        "--max-steps", type=positive_int, default=150, help="optimizer steps to run (default: %(default)s)"
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=16,
        help=f"sequences per step on each {batch_per} (default: %(default)s)",
    )
    parser.add_argument(
        "--seq-len", type=positive_int, default=32, help="tokens per training sequence (default: %(default)s)"
    )
    parser.add_argument("--lr", type=float, default=3e-3, help="peak learning rate (default: %(default)s)")
    parser.add_argument(
        "--warmup-steps",
        type=int,
        default=10,
        help="steps of linear warmup before the cosine decay (default: %(default)s)",
    )
    parser.add_argument(
        "--save-model",
        action="store_true",
        help="save model and tokenizer with save_pretrained into OUTPUT_DIR/checkpoint at the end",
    )
    return parser
