"""Simulated devices run as real ones would (`nox -s bench`): issue 23's workloads, each beside the
previous behaviour (workers capped at the cores: `--workers <cores>`), ratios within one run.

1. Mixed: 19 sleep-only specs on --fake-gpus 4 (one 4-device, two 2-device, sixteen 1-device),
   cold then warm; warm makespan / lower bound (target <= 1.05) and plan expected / warm (within 10%).
2. Packing: eight 1.5 s specs declaring 5 GiB on one simulated 24 GiB device: runs at once (target 4),
   declared GiB at once (never over 24), span / memory-aware lower bound (target <= 1.2).
3. Huge: `plan --fake-gpus 100000` over 200 specs: seconds to plan, workers (never over the ceiling).

The machine may be shared: compare the ratios of one run, and repeat (--repeat K, the median is kept).

Usage: python benchmarks/bench_simulated.py [--json OUT] [--repeat K]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
CEILING = 64
MIXED = [("wide", 4, 6.0), ("two_a", 2, 5.0), ("two_b", 2, 4.0)] + [
    (f"one_{i:02d}", 1, (3.0, 2.5, 2.0, 1.5)[i % 4]) for i in range(16)
]


def write(folder: Path, specs: list[tuple[str, int, float]], **extra) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for spec_id, gpus, seconds in specs:
        spec = {"id": spec_id, "command": ["sleep", str(seconds)], "gpus": gpus, "cpu_ok": True, "timeout": 60}
        (folder / f"{spec_id}.yaml").write_text(json.dumps({**spec, "min_steps_logged": 0, **extra}))


def harness(args: list[str], cwd: Path, cache: Path) -> tuple[float, subprocess.CompletedProcess]:
    env = {**os.environ, "TRAINSPEC_CACHE_DIR": str(cache)}
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "harness", *args], cwd=cwd, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(done.stdout + done.stderr)
    return time.perf_counter() - began, done


def spans(run_dir: Path) -> list[tuple[float, float]]:
    records = json.loads((run_dir / "results.json").read_text())["specs"]
    return [(r["start_time"], r["start_time"] + r["duration"]) for r in records if r["outcome"] == "passed"]


def most_at_once(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    now = best = 0
    for _, step in events:
        now += step
        best = max(best, now)
    return best


def run(project: Path, cache: Path, run_dir: Path, flags: list[str]) -> dict:
    _, done = harness(["run", *flags, "--run-dir", str(run_dir), "-q"], project, cache)
    figures = json.loads((run_dir / "results.json").read_text())["schedule"]
    started = re.search(r"created: (\d+)/\d+ workers", done.stdout)
    return {**figures, "workers": int(started.group(1)) if started else 1, "at_once": most_at_once(spans(run_dir))}


def bench_mixed(work: Path) -> dict:
    project, cache = work / "mixed", work / "mixed-cache"
    write(project / "specs", MIXED)
    flags = ["--fake-gpus", "4"]
    run(project, cache, work / "mixed-cold", flags)  # records the durations
    now = run(project, cache, work / "mixed-warm", flags)
    before = run(project, cache, work / "mixed-before", [*flags, "--workers", str(CORES)])
    bound = now["lower_bound_s"]
    return {
        "lower_bound_s": bound,
        "warm_makespan_s": now["makespan_s"],
        "warm_ratio": round(now["makespan_s"] / bound, 3),
        "plan_expected_s": now["plan_expected_s"],
        "plan_vs_warm": round(now["plan_expected_s"] / now["makespan_s"], 3),
        "idle_device_s": now["idle_device_s"],
        "before_makespan_s": before["makespan_s"],
        "before_ratio": round(before["makespan_s"] / bound, 3),
        "before_plan_vs_run": round(before["plan_expected_s"] / before["makespan_s"], 3),
    }


def bench_packing(work: Path) -> dict:
    project, cache = work / "packing", work / "packing-cache"
    write(project / "specs", [(f"p{i}", 1, 1.5) for i in range(8)], gpu_memory="5GiB")
    flags = ["--fake-gpus", "1", "--fake-gpu-memory", "24GiB"]
    run(project, cache, work / "packing-cold", flags)
    now = run(project, cache, work / "packing-warm", flags)
    before = run(project, cache, work / "packing-before", [*flags, "--workers", str(CORES)])
    bound = now["lower_bound_s"]
    return {
        "lower_bound_s": bound,
        "at_once": now["at_once"],
        "gib_at_once": now["at_once"] * 5,
        "span_s": now["makespan_s"],
        "span_ratio": round(now["makespan_s"] / bound, 3),
        "plan_vs_run": round(now["plan_expected_s"] / now["makespan_s"], 3),
        "before_at_once": before["at_once"],
        "before_span_s": before["makespan_s"],
        "before_ratio": round(before["makespan_s"] / bound, 3),
    }


def bench_huge(work: Path) -> dict:
    project = work / "huge"
    write(project / "specs", [(f"h{i:03d}", 1 + (i % 3 == 0), 1.0) for i in range(200)])
    wall, done = harness(["plan", "--fake-gpus", "100000"], project, work / "huge-cache")
    workers = int(re.search(r"concurrency: 100000 devices, (\d+) worker", done.stdout).group(1))
    return {"specs": 200, "plan_s": round(wall, 2), "workers": workers, "ceiling": CEILING}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--repeat", type=int, default=1, help="repetitions; the median of each figure is reported")
    args = parser.parse_args()
    runs = []
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory(prefix="trainspec-bench-") as tmp:
            work = Path(tmp)
            runs.append({"mixed": bench_mixed(work), "packing": bench_packing(work), "huge": bench_huge(work)})
    median = {
        section: {key: statistics.median(r[section][key] for r in runs) for key in runs[0][section]}
        for section in runs[0]
    }
    m, p, h = median["mixed"], median["packing"], median["huge"]
    met = {
        "mixed warm <= 1.05 x bound": m["warm_ratio"] <= 1.05,
        "mixed plan within 10% of warm": abs(m["plan_vs_warm"] - 1) <= 0.10,
        "packing four at once, <= 24 GiB": p["at_once"] == 4 and p["gib_at_once"] <= 24,
        "packing span <= 1.2 x bound": p["span_ratio"] <= 1.2,
        "100000 devices: plans in seconds, workers <= ceiling": h["plan_s"] < 10 and h["workers"] <= CEILING,
    }
    print(f"{CORES} cores; previous behaviour: --workers {CORES} (workers capped at the cores)")
    print(f"{'workload':<34} {'now':>10} {'before':>10}")
    print(f"{'mixed 19: warm makespan / bound':<34} {m['warm_ratio']:>10.3f} {m['before_ratio']:>10.3f}")
    print(f"{'mixed 19: plan expected / run':<34} {m['plan_vs_warm']:>10.3f} {m['before_plan_vs_run']:>10.3f}")
    print(f"{'packing 8x5GiB: runs at once':<34} {p['at_once']:>10.0f} {p['before_at_once']:>10.0f}")
    print(f"{'packing 8x5GiB: span / bound':<34} {p['span_ratio']:>10.3f} {p['before_ratio']:>10.3f}")
    print(f"{'100000 devices: plan s, workers':<34} {h['plan_s']:>6.2f}s {h['workers']:>3.0f}")
    for name, ok in met.items():
        print(f"{'met' if ok else 'MISSED'}: {name}")
    if args.json:
        args.json.write_text(json.dumps({"median": median, "met": met, "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
