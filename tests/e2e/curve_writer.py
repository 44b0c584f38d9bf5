"""A stand-in trainer for comparison tests: writes a given loss curve as JSON lines, and may fail.

python curve_writer.py OUTPUT_DIR --losses 3,2,1 [--first-step N] [--exit CODE]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("output_dir", type=Path)
    parser.add_argument("--losses", required=True, help="comma-separated losses, one per step")
    parser.add_argument("--first-step", type=int, default=1)
    parser.add_argument("--exit", type=int, default=0)
    args = parser.parse_args()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    losses = [float(v) for v in args.losses.split(",")]
    lines = [json.dumps({"step": args.first_step + i, "loss": v}) for i, v in enumerate(losses)]
    (args.output_dir / "train_log.jsonl").write_text("\n".join(lines) + "\n")
    if args.exit:
        print("stand-in trainer: failing as asked", file=sys.stderr)
    return args.exit


if __name__ == "__main__":
    sys.exit(main())
