"""Scheduling and overhead benchmark of the harness (`nox -s bench`; not part of CI's verdict).

1. Makespan: a synthetic workload of sleep-only specs with mixed 1/2/4-device needs and
   skewed durations on 4 fake devices, run cold (no recorded durations) and warm (the
   durations the cold run recorded), each as a ratio to the lower bound
   max(longest run, sum(devices x duration) / devices).
2. Overhead: N trivial specs through the harness vs the same commands run bare, one after
   the other, in one process.
3. Collect + plan of 1,000 generated specs (`harness plan`, and pytest collection), in
   whatever venv runs this (the nox session's has no torch).

Usage: python benchmarks/bench_scheduling.py [--json OUT] [--repeat K]
"""

from __future__ import annotations

import json
import random
import subprocess
import time
from pathlib import Path

from common import bench_arguments, medians, repeated, run_harness, write_sleep_specs

DEVICES = 4
TARGETS = {"warm_ratio": 1.10, "cold_ratio": 1.30, "overhead_ms": 25.0, "plan_1000_s": 1.5}


def workload(seed: int = 7, count: int = 24) -> list[tuple[str, int, float]]:
    """(id, devices, seconds): mostly short 1-device runs, a few long and wide ones."""
    rng = random.Random(seed)
    specs = []
    for i in range(count):
        devices = rng.choices([1, 2, 4], weights=[6, 3, 1])[0]
        seconds = round(min(6.0, 0.3 + rng.paretovariate(1.6) * 0.4), 2)
        specs.append((f"w{i:02d}", devices, seconds))
    return specs


def makespan(run_dir: Path) -> float:
    records = json.loads((run_dir / "results.json").read_text())["specs"]
    ran = [r for r in records if r["outcome"] == "passed"]
    if len(ran) != len(records):
        raise SystemExit(
            f"benchmark specs did not all pass: {[(r['id'], r['reason']) for r in records if r['outcome'] != 'passed']}"
        )
    return max(r["start_time"] + r["duration"] for r in ran) - min(r["start_time"] for r in ran)


def lower_bound(specs: list[tuple[str, int, float]]) -> float:
    return max(max(s for _, _, s in specs), sum(d * s for _, d, s in specs) / DEVICES)


def bench_makespan(work: Path) -> dict:
    specs = workload()
    project = work / "makespan"
    # Timeouts say nothing about real durations (as in life): the cold run orders blind.
    write_sleep_specs(project / "specs", specs, timeout=120)
    cache = work / "makespan-cache"
    bound = lower_bound(specs)
    out = {"specs": len(specs), "lower_bound_s": round(bound, 2)}
    for name in ("cold", "warm"):
        wall, _ = run_harness(
            ["run", "--fake-gpus", str(DEVICES), "--run-dir", str(work / f"run-{name}"), "-q"], project, cache
        )
        span = makespan(work / f"run-{name}")
        out[f"{name}_makespan_s"] = round(span, 2)
        out[f"{name}_ratio"] = round(span / bound, 3)
        out[f"{name}_wall_s"] = round(wall, 2)
    return out


def bench_overhead(work: Path, count: int = 60) -> dict:
    project = work / "overhead"
    specs = [(f"t{i:03d}", 1, 0.0) for i in range(count)]
    write_sleep_specs(project / "specs", specs)
    for spec in (project / "specs").glob("*.yaml"):
        data = json.loads(spec.read_text())
        data["command"] = ["true"]
        spec.write_text(json.dumps(data))
    began = time.perf_counter()
    for _ in specs:
        subprocess.run(["true"], check=True)
    bare = time.perf_counter() - began
    wall, _ = run_harness(
        ["run", "--fake-gpus", "1", "--run-dir", str(work / "run-overhead"), "-q"], project, work / "overhead-cache"
    )
    # Start-up (python, pytest, collection) is paid once per run, not per spec: measure it alone.
    empty, _ = run_harness(
        ["run", "--fake-gpus", "1", "--run-dir", str(work / "run-empty"), "-q", "-k", "nothing_matches"],
        project,
        work / "overhead-cache",
    )
    per_spec = (wall - empty - bare) / count
    return {
        "specs": count,
        "bare_s": round(bare, 3),
        "harness_s": round(wall, 3),
        "startup_s": round(empty, 3),
        "overhead_ms_per_spec": round(per_spec * 1000, 1),
    }


def bench_plan(work: Path, count: int = 1000) -> dict:
    project = work / "plan"
    rng = random.Random(3)
    write_sleep_specs(project / "specs", [(f"p{i:04d}", rng.choice([0, 1, 2, 4]), 1.0) for i in range(count)])
    plan_wall, _ = run_harness(["plan", "--fake-gpus", str(DEVICES)], project, work / "plan-cache")
    collect_wall, _ = run_harness(
        [
            "run",
            "--fake-gpus",
            str(DEVICES),
            "--workers",
            "0",
            "--collect-only",
            "-q",
            "--run-dir",
            str(work / "run-collect"),
        ],
        project,
        work / "plan-cache",
    )
    try:
        import torch  # noqa: F401

        torch_present = True
    except ImportError:
        torch_present = False
    return {
        "specs": count,
        "plan_s": round(plan_wall, 3),
        "pytest_collect_s": round(collect_wall, 3),
        "torch_installed": torch_present,
    }


def main() -> None:
    args = bench_arguments(__doc__, repeat=3)
    runs = repeated(
        lambda work: {"makespan": bench_makespan(work), "overhead": bench_overhead(work), "plan": bench_plan(work)},
        args.repeat,
    )
    median = medians(runs)
    verdict = {
        "warm_ratio": median["makespan"]["warm_ratio"] <= TARGETS["warm_ratio"],
        "cold_ratio": median["makespan"]["cold_ratio"] <= TARGETS["cold_ratio"],
        "overhead_ms": median["overhead"]["overhead_ms_per_spec"] <= TARGETS["overhead_ms"],
        "plan_1000_s": median["plan"]["plan_s"] <= TARGETS["plan_1000_s"],
    }
    report = {"median_of": args.repeat, "results": median, "targets": TARGETS, "met": verdict, "runs": runs}
    print(json.dumps({k: report[k] for k in ("median_of", "results", "targets", "met")}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
