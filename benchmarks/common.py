"""What the end-to-end benchmarks share: sleep-only spec folders, the harness as a subprocess, medians.

The benchmarks are run as scripts (`python benchmarks/bench_x.py`), so this folder is on the path.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

# (id, devices, seconds) of one sleep-only spec.
SleepSpec = tuple[str, int, float]


def write_sleep_specs(folder: Path, specs: list[SleepSpec], timeout: float = 60, **fields: Any) -> None:
    """One spec file per entry: `sleep <seconds>` on its devices, logging nothing; `fields` go into every spec."""
    folder.mkdir(parents=True, exist_ok=True)
    for spec_id, devices, seconds in specs:
        spec = {
            "id": spec_id,
            "command": ["sleep", str(seconds)],
            "gpus": devices,
            "cpu_ok": True,
            "timeout": timeout,
            "min_steps_logged": 0,
        }
        (folder / f"{spec_id}.yaml").write_text(json.dumps({**spec, **fields}))


def run_harness(args: list[str], cwd: Path, cache: Path) -> tuple[float, subprocess.CompletedProcess]:
    """`python -m harness ARGS` in `cwd` with its own cache; the wall time, and the process. A failed
    harness ends the benchmark with its output: a figure from a red run would mislead."""
    env = {**os.environ, "TRAINSPEC_CACHE_DIR": str(cache)}
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stdout + done.stderr)
    return time.perf_counter() - began, done


def bench_arguments(doc: str, repeat: int) -> argparse.Namespace:
    """--json OUT and --repeat K (`repeat` by default), with the first paragraph of `doc` as the description."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--repeat", type=int, default=repeat, help="repetitions; the median of each figure is reported")
    return parser.parse_args()


def repeated(measure: Callable[[Path], dict[str, dict[str, Any]]], repeat: int) -> list[dict[str, dict[str, Any]]]:
    """`measure` (figures by section) `repeat` times, each in a fresh temporary folder it may fill."""
    runs = []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory(prefix="trainspec-bench-") as tmp:
            runs.append(measure(Path(tmp)))
    return runs


def medians(runs: list[dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per section and figure, the median over repeated runs (non-numbers: the first run's)."""

    def median(section: str, key: str) -> Any:
        values = [run[section][key] for run in runs]
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
        return statistics.median(values) if numeric else values[0]

    return {section: {key: median(section, key) for key in runs[0][section]} for section in runs[0]}
