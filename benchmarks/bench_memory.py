"""Peak memory of reading a large training log (`nox -s bench`; not part of CI's verdict).

A JSON-lines log of N lines (step, loss and grad_norm, 55 bytes a line) is read in a fresh subprocess,
once the way fail-fast follows it (every poll of the watcher until the whole file is read) and once the way
the final checks read it (`run_checks` with min_steps_logged, no_nan, final_max, must_decrease and a metric bound,
then the thinned curve for the record). The figure is the subprocess's peak resident set
(ru_maxrss), next to the same process reading a 10-line log, so the growth with the log's
size shows. Issue 17: a 1e6-line (35 MB) log once took the harness to 650-730 MB.

Usage: python benchmarks/bench_memory.py [--lines 100000 1000000] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET_MB = 250.0
PHASES = ("watch", "check")


def write_log(path: Path, lines: int) -> None:
    with open(path, "w") as stream:
        for step in range(1, lines + 1):
            stream.write(
                f'{{"step": {step}, "loss": {2.0 + 1.0 / step:.6f}, "grad_norm": {1.0 + step % 7 / 10:.3f}}}\n'
            )


def child(phase: str, out: Path) -> dict:
    """Runs in the subprocess: read the log one way and report this process's peak RSS."""
    sys.path.insert(0, str(ROOT))
    from harness.checks.after_run import run_checks
    from harness.checks.fail_fast import fail_fast_watchers
    from harness.process import ProcessOutcome
    from harness.records import thin_curve
    from harness.spec.model import spec_from_mapping

    fields = {
        "min_steps_logged": 10,
        "loss": {"final_max": 3.5, "must_decrease": True},
        "metrics": {"grad_norm": {"max": 2.0}},
    }
    spec = spec_from_mapping({"id": "bench", "command": ["x"], **fields}, Path("bench.yaml"))
    stderr = out / "stderr.log"
    began = time.perf_counter()
    if phase == "watch":
        (watcher,) = [w for w in fail_fast_watchers(spec, out, stderr) if type(w).__name__ == "LossWatcher"]
        stopped = None
        while stopped is None and not (watcher.reader and watcher.reader.reader and watcher.reader.reader.exhausted):
            stopped = watcher.poll()
        summary = {"stopped_by": stopped}
    else:
        results, log = run_checks(spec, ProcessOutcome(exit_code=0, duration=1.0), out, stderr)
        curve = thin_curve(log.curve()) if log else []
        summary = {
            "failed": [r.line() for r in results if not r.passed],
            "steps": len(log.entries) if log else 0,
            "curve_points": len(curve),
        }
    seconds = time.perf_counter() - began
    return {
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "seconds": round(seconds, 2),
        **summary,
    }


def measure(lines: int, phase: str, work: Path) -> dict:
    out = work / f"out-{lines}"
    if not out.exists():
        out.mkdir()
        (out / "stderr.log").write_text("")
        write_log(out / "train_log.jsonl", lines)
    done = subprocess.run(
        [sys.executable, __file__, "--child", phase, str(out)], capture_output=True, text=True, check=True
    )
    return {
        "lines": lines,
        "phase": phase,
        "log_mb": round((out / "train_log.jsonl").stat().st_size / 1e6, 1),
        **json.loads(done.stdout),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", nargs=2, metavar=("PHASE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]))))
        return 0
    rows = []
    with tempfile.TemporaryDirectory(prefix="trainspec-bench-memory-") as tmp:
        for lines in [10, *args.lines]:
            for phase in PHASES:
                row = measure(lines, phase, Path(tmp))
                rows.append(row)
                print(
                    f"{lines:>9} lines ({row['log_mb']:>5} MB)  {phase:<5}  peak RSS {row['peak_mb']:7.1f} "
                    f"MB  {row['seconds']:6.2f} s"
                )
    failed = [r for r in rows if r["peak_mb"] > TARGET_MB or r.get("failed") or r.get("stopped_by")]
    for row in failed:
        print(f"over the {TARGET_MB:.0f} MB target or wrong: {row}")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
