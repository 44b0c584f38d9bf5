"""A second run with nothing changed, against the first (issue 15; not part of CI's verdict).

Runs `python -m harness run --tier TIER --fake-gpus 1 --skip-unchanged` twice over the bundled
specs with a fresh cache, and prints both wall times and their ratio. The target: the second
takes at most 10 % of the first (every spec reused as unchanged). Run it with an interpreter
that has torch and transformers (a nox session's venv).

Usage: python benchmarks/bench_unchanged.py [--tier standard] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = 0.10


def timed_run(tier: str, cache: Path, run_dir: Path) -> tuple[float, dict[str, int]]:
    env = {**os.environ, "TRAINSPEC_CACHE_DIR": str(cache), "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    argv = [
        sys.executable,
        "-m",
        "harness",
        "run",
        "--tier",
        tier,
        "--fake-gpus",
        "1",
        "--skip-unchanged",
        "--run-dir",
        str(run_dir),
    ]
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"{' '.join(argv)} exited {proc.returncode}:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return seconds, json.loads((run_dir / "results.json").read_text())["summary"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tier", default="standard")
    parser.add_argument("--json", metavar="OUT")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        first, first_counts = timed_run(args.tier, Path(folder) / "cache", Path(folder) / "run1")
        second, second_counts = timed_run(args.tier, Path(folder) / "cache", Path(folder) / "run2")
    ratio = second / first
    print(f"first run  {first:8.2f} s  {first_counts}")
    print(f"second run {second:8.2f} s  {second_counts}")
    print(f"second / first = {ratio:.1%} (target <= {TARGET:.0%}): {'ok' if ratio <= TARGET else 'MISSED'}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"first": first, "second": second, "ratio": ratio, "target": TARGET}, indent=1)
        )
    return 0 if ratio <= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
