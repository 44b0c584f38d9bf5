"""Simulated devices run as real ones would (`nox -s bench`): issue 23's workloads, each beside the
previous behaviour (workers capped at the cores: `--workers <cores>`), ratios within one run.

1. Mixed: 19 sleep-only specs on --fake-gpus 4 (one 4-device, two 2-device, sixteen 1-device),
   cold then warm; warm makespan / lower bound (target <= 1.05) and plan expected / warm (within 10%).
2. Packing: eight 1.5 s specs declaring 5 GiB on one simulated 24 GiB device: runs at once (target 4),
   declared GiB at once (never over 24), span / memory-aware lower bound (target <= 1.2).
3. Huge: `plan --fake-gpus 100000` over 200 specs: seconds to plan, workers (never over the ceiling).
4. Hand-out gaps, in 1 and 2: from the end that freed room to the next start (lease release, worker
   hand-out, the harness's work before the process starts), beside what starting a process costs here
   and what the lease pool alone takes to hand a device to a process waiting for it.

The machine may be shared: compare the ratios of one run, and repeat (--repeat K, the median is kept).

Usage: python benchmarks/bench_simulated.py [--json OUT] [--repeat K]
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import SleepSpec, bench_arguments, medians, repeated, run_harness, write_sleep_specs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.devices.leases import LeasePool  # noqa: E402  (the repository root is put on the path first)

CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
CEILING = 64
MIXED: list[SleepSpec] = [("wide", 4, 6.0), ("two_a", 2, 5.0), ("two_b", 2, 4.0)] + [
    (f"one_{i:02d}", 1, (3.0, 2.5, 2.0, 1.5)[i % 4]) for i in range(16)
]


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


def hand_out_gaps(intervals: list[tuple[float, float]]) -> list[float]:
    """For each run that started after another ended: from the last end before its start (the room it
    took) to its start, in ms. Lease release, worker hand-out and the harness's work before the process starts."""
    ends = sorted(end for _, end in intervals)
    return [1000 * (start - max(e for e in ends if e <= start)) for start, _ in intervals if ends[0] <= start]


def process_start_ms(count: int = 30) -> float:
    """What starting and reaping one process costs here (`true`, the median of `count`): the floor for a gap."""
    took = []
    for _ in range(count):
        began = time.perf_counter()
        subprocess.run(["true"], check=True)
        took.append(1000 * (time.perf_counter() - began))
    return statistics.median(took)


def _hold_and_release(state: str, handed: multiprocessing.Queue, rounds: int) -> None:
    pool = LeasePool(Path(state), ("0",), run="bench")
    for _ in range(rounds):
        lease = pool.acquire(1, "holder")
        time.sleep(0.1)
        handed.put(("released", time.time()))
        lease.release()
        time.sleep(0.15)


def _wait_and_take(state: str, handed: multiprocessing.Queue, rounds: int) -> None:
    pool = LeasePool(Path(state), ("0",), run="bench")
    time.sleep(0.05)
    for _ in range(rounds):
        lease = pool.acquire(1, "waiter", priority=1)
        handed.put(("taken", time.time()))
        time.sleep(0.1)
        lease.release()


def lease_handover_ms(work: Path, rounds: int = 20) -> list[float]:
    """A device handed from one process to another that waits for it: release to grant, in ms."""
    handed: multiprocessing.Queue = multiprocessing.Queue()
    state = str(work / "handover.json")
    sides = (_hold_and_release, _wait_and_take)
    both = [multiprocessing.Process(target=side, args=(state, handed, rounds)) for side in sides]
    for process in both:
        process.start()
    events = [handed.get(timeout=60) for _ in range(2 * rounds)]
    for process in both:
        process.join()
    released = [t for kind, t in events if kind == "released"]
    taken = [t for kind, t in events if kind == "taken"]
    return [1000 * (min(t for t in taken if t >= r) - r) for r in released if any(t >= r for t in taken)]


def run(project: Path, cache: Path, run_dir: Path, flags: list[str]) -> dict:
    _, done = run_harness(["run", *flags, "--run-dir", str(run_dir), "-q"], project, cache)
    figures = json.loads((run_dir / "results.json").read_text())["schedule"]
    started = re.search(r"created: (\d+)/\d+ workers", done.stdout)
    intervals = spans(run_dir)
    gaps = hand_out_gaps(intervals) or [0.0]
    return {
        **figures,
        "workers": int(started.group(1)) if started else 1,
        "at_once": most_at_once(intervals),
        "gap_median_ms": round(statistics.median(gaps), 1),
        "gap_max_ms": round(max(gaps), 1),
    }


def compared(project: Path, cache: Path, work: Path, name: str, flags: list[str]) -> tuple[dict, dict]:
    """Cold (records the lengths), then warm, then warm with workers capped at the cores (as before)."""
    run(project, cache, work / f"{name}-cold", flags)
    now = run(project, cache, work / f"{name}-warm", flags)
    return now, run(project, cache, work / f"{name}-before", [*flags, "--workers", str(CORES)])


def bench_mixed(work: Path) -> dict:
    project = work / "mixed"
    write_sleep_specs(project / "specs", MIXED)
    now, before = compared(project, work / "mixed-cache", work, "mixed", ["--fake-gpus", "4"])
    bound = now["lower_bound_s"]
    return {
        "lower_bound_s": bound,
        "warm_makespan_s": now["makespan_s"],
        "warm_ratio": round(now["makespan_s"] / bound, 3),
        "plan_expected_s": now["plan_expected_s"],
        "plan_vs_warm": round(now["plan_expected_s"] / now["makespan_s"], 3),
        "idle_device_s": now["idle_device_s"],
        "gap_median_ms": now["gap_median_ms"],
        "gap_max_ms": now["gap_max_ms"],
        "before_makespan_s": before["makespan_s"],
        "before_ratio": round(before["makespan_s"] / bound, 3),
        "before_plan_vs_run": round(before["plan_expected_s"] / before["makespan_s"], 3),
        "before_gap_median_ms": before["gap_median_ms"],
    }


def bench_packing(work: Path) -> dict:
    project = work / "packing"
    write_sleep_specs(project / "specs", [(f"p{i}", 1, 1.5) for i in range(8)], gpu_memory="5GiB")
    flags = ["--fake-gpus", "1", "--fake-gpu-memory", "24GiB"]
    now, before = compared(project, work / "packing-cache", work, "packing", flags)
    bound = now["lower_bound_s"]
    return {
        "lower_bound_s": bound,
        "at_once": now["at_once"],
        "gib_at_once": now["at_once"] * 5,
        "span_s": now["makespan_s"],
        "span_ratio": round(now["makespan_s"] / bound, 3),
        "plan_vs_run": round(now["plan_expected_s"] / now["makespan_s"], 3),
        "gap_median_ms": now["gap_median_ms"],
        "before_at_once": before["at_once"],
        "before_span_s": before["makespan_s"],
        "before_ratio": round(before["makespan_s"] / bound, 3),
        "before_gap_median_ms": before["gap_median_ms"],
    }


def bench_huge(work: Path) -> dict:
    project = work / "huge"
    write_sleep_specs(project / "specs", [(f"h{i:03d}", 1 + (i % 3 == 0), 1.0) for i in range(200)])
    wall, done = run_harness(["plan", "--fake-gpus", "100000"], project, work / "huge-cache")
    workers = int(re.search(r"concurrency: 100000 devices, (\d+) worker", done.stdout).group(1))
    return {"specs": 200, "plan_s": round(wall, 2), "workers": workers, "ceiling": CEILING}


def main() -> int:
    args = bench_arguments(__doc__, repeat=1)
    runs = repeated(
        lambda work: {
            "mixed": bench_mixed(work),
            "packing": bench_packing(work),
            "huge": bench_huge(work),
            "machine": {
                "process_start_ms": round(process_start_ms(), 2),
                "lease_handover_ms": round(statistics.median(lease_handover_ms(work)), 1),
            },
        },
        args.repeat,
    )
    median = medians(runs)
    m, p, h, start = median["mixed"], median["packing"], median["huge"], median["machine"]["process_start_ms"]
    met = {
        "mixed warm <= 1.05 x bound": m["warm_ratio"] <= 1.05,
        "mixed plan within 10% of warm": abs(m["plan_vs_warm"] - 1) <= 0.10,
        "packing four at once, <= 24 GiB": p["at_once"] == 4 and p["gib_at_once"] <= 24,
        "packing span <= 1.2 x bound": p["span_ratio"] <= 1.2,
        "100000 devices: plans in seconds, workers <= ceiling": h["plan_s"] < 10 and h["workers"] <= CEILING,
    }
    print(f"{CORES} cores; before: --workers {CORES} (workers capped at the cores); median of {args.repeat}")
    print(f"{'workload':<36} {'now':>10} {'before':>10}")
    rows = [
        ("mixed 19: warm makespan / bound", m["warm_ratio"], m["before_ratio"]),
        ("mixed 19: plan expected / run", m["plan_vs_warm"], m["before_plan_vs_run"]),
        ("mixed 19: hand-out gap, median ms", m["gap_median_ms"], m["before_gap_median_ms"]),
        ("packing 8x5GiB: runs at once", p["at_once"], p["before_at_once"]),
        ("packing 8x5GiB: span / bound", p["span_ratio"], p["before_ratio"]),
        ("packing 8x5GiB: hand-out gap, ms", p["gap_median_ms"], p["before_gap_median_ms"]),
    ]
    for name, now, before in rows:
        print(f"{name:<36} {now:>10.3f} {before:>10.3f}")
    print(f"{'100000 devices: plan s, workers':<36} {h['plan_s']:>9.2f}s {h['workers']:>10.0f}")
    print(f"starting one process here costs {start:.1f} ms (the floor of a hand-out gap's process start)")
    print(f"a device handed from one waiting process to another: {median['machine']['lease_handover_ms']:.1f} ms")
    for name, ok in met.items():
        print(f"{'met' if ok else 'MISSED'}: {name}")
    if args.json:
        args.json.write_text(json.dumps({"median": median, "met": met, "runs": runs}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
