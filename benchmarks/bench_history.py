"""`harness history` over a large SQLite history (issue 24; not part of CI's verdict).

Fills a fresh SQLite history with RUNS runs of SPECS specs each (the schema the harness
migrates to, rows as a run appends them, commits in order with a few runs per commit), then
times `python -m harness history` twice: the answer (opening the store and reading every
spec's last 20 runs, in process) and the whole command in a fresh interpreter (startup and
imports included). The target: the answer under one second.

Usage: python benchmarks/bench_history.py [--runs 10000] [--specs 50] [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.history.store import open_store  # noqa: E402
from harness.history.tables import runs, spec_runs  # noqa: E402

TARGET = 1.0


def fill(url: str, run_count: int, spec_count: int) -> None:
    store = open_store(url)
    rng = random.Random(0)
    # As facts.spec_row stores it: 100 points, six significant digits.
    curve = json.dumps([[s, float(f"{2.0 / s:.6g}")] for s in range(1, 101)])
    batch = 500
    with store.engine.begin() as connection:
        for first in range(0, run_count, batch):
            run_rows, spec_rows = [], []
            for n in range(first, min(first + batch, run_count)):
                commit = f"{n // 3:040x}"
                created = f"2026-{1 + n // 100000 % 12:02d}-01T00:00:00+00:00#{n:07d}"
                run_rows.append(
                    {
                        "id": n + 1,
                        "uid": f"/runs/{n}",
                        "created": created,
                        "commit": commit,
                        "commit_time": 1.7e9 + n // 3,
                        "branch": "main",
                        "dirty": False,
                        "versions": "{}",
                        "versions_key": "python=3.11 torch=2.13.0 transformers=4.57.6 cuda=None",
                        "device_kind": "cuda",
                        "backend": "local",
                        "tier": "full",
                        "argv": "[]",
                        "run_dir": f"/runs/{n}",
                        "harness": "0.1.0",
                        "interrupted": False,
                    }
                )
                for s in range(spec_count):
                    spec_rows.append(
                        {
                            "run_id": n + 1,
                            "spec_id": f"spec-{s:02d}",
                            "outcome": "passed" if rng.random() > 0.02 else "failed",
                            "failure_kind": None,
                            "reason": "",
                            "duration": 60 + rng.gauss(0, 2),
                            "final_loss": 1.0 + rng.gauss(0, 0.01),
                            "perplexity": None,
                            "peak_gpu_memory": 20000,
                            "steps": 100,
                            "fingerprint": f"{n // 3:064x}",
                            "retried_pass": False,
                            "metrics": '{"grad_norm": 0.5}',
                            "loss_curve": curve,
                            "commit": commit,
                            "commit_time": 1.7e9 + n // 3,
                            "created": created,
                            "device_kind": "cuda",
                            "versions_key": "python=3.11 torch=2.13.0 transformers=4.57.6 cuda=None",
                        }
                    )
            connection.execute(runs.insert(), run_rows)
            connection.execute(spec_runs.insert(), spec_rows)
    store.close()


def answer(history: Path) -> float:
    from harness.cli import main

    began = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        code = main(["history", "--history", str(history)])
    assert code == 0
    return time.perf_counter() - began


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--specs", type=int, default=50)
    parser.add_argument("--json", metavar="OUT")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        history = Path(folder) / "history.sqlite"
        began = time.perf_counter()
        fill(f"sqlite:///{history}", args.runs, args.specs)
        filled = time.perf_counter() - began
        answer(history)  # imports and the first open out of the measured answer
        answers = [answer(history) for _ in range(3)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        began = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "harness", "history", "--history", str(history)],
            env=env,
            check=True,
            capture_output=True,
        )
        command = time.perf_counter() - began
        size = history.stat().st_size
    result = {
        "runs": args.runs,
        "specs": args.specs,
        "fill_seconds": round(filled, 1),
        "store_mib": round(size / 2**20, 1),
        "answer_seconds": round(min(answers), 3),
        "command_seconds": round(command, 3),
        "target_seconds": TARGET,
        "met": min(answers) < TARGET,
    }
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return 0 if result["met"] else 1


if __name__ == "__main__":
    sys.exit(main())
