"""Packing benchmark (`nox -s bench`): a mixed workload of declared memories and device counts on fake devices.

The plan's simulated makespan (the lease pool's own rule over `packing.Devices`) is set
against the plan's lower bound (`Plan.lower_bound`: runs that overlap nothing in series, then
the largest of device-memory-seconds / devices, seconds / workers and the longest chain of
runs that cannot overlap; target: at most 1.15 times it), and against scheduling the same
specs with every device held whole, as before packing existed, side by side. Exits 1, saying
so, when a workload is above the target.

Usage: python benchmarks/bench_packing.py [--json OUT] [--seeds K]
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.devices.visible import discover  # noqa: E402  (the repository root is put on the path first)
from harness.planning.plan import make_plan  # noqa: E402
from harness.spec.files import spec_from_mapping  # noqa: E402

DEVICES, DEVICE_GIB = 4, 80
TARGET_RATIO = 1.15


def workload(seed: int, count: int = 60) -> tuple[list, dict[str, float]]:
    """Specs and their durations: mostly small declared 1-device runs, some large or wide, a few whole-device ones."""
    rng = random.Random(seed)
    specs, durations = [], {}
    for i in range(count):
        gpus = rng.choices([1, 2, 4], weights=[8, 3, 1])[0]
        memory = rng.choices(["2GiB", "6GiB", "12GiB", "24GiB", "40GiB", None], weights=[5, 5, 4, 2, 1, 1])[0]
        fields = {
            "id": f"s{i:02d}",
            "command": ["x"],
            "gpus": gpus,
            "cpu_ok": True,
            **({"gpu_memory": memory} if memory else {}),
        }
        specs.append(spec_from_mapping(fields, Path(f"s{i:02d}.yaml")))
        durations[f"s{i:02d}"] = round(min(120.0, 5 + rng.paretovariate(1.5) * 10), 1)
    return specs, durations


def measure(seed: int) -> dict:
    inventory = discover(fake_gpus=DEVICES, fake_gpu_memory=DEVICE_GIB * 1024)
    specs, durations = workload(seed)
    began = time.perf_counter()
    packed = make_plan(specs, inventory, durations)
    planning = time.perf_counter() - began
    whole = make_plan(
        [
            spec_from_mapping({**{"id": s.id, "command": ["x"], "gpus": s.gpus, "cpu_ok": True}}, s.source)
            for s in specs
        ],
        inventory,
        durations,
    )
    return {
        "seed": seed,
        "specs": len(specs),
        "lower_bound_s": round(packed.lower_bound, 1),
        "packed_s": round(packed.simulated, 1),
        "exclusive_s": round(whole.simulated, 1),
        "ratio_to_bound": round(packed.simulated / packed.lower_bound, 3),
        "speedup_over_exclusive": round(whole.simulated / packed.simulated, 2),
        "workers": packed.workers,
        "plan_s": round(planning, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", metavar="OUT", help="write the figures here as JSON")
    parser.add_argument("--seeds", type=int, default=5, help="workloads to measure (default 5)")
    args = parser.parse_args()
    rows = [measure(seed) for seed in range(args.seeds)]
    print(f"{DEVICES} fake devices of {DEVICE_GIB} GiB, headroom 10%; makespans simulated by the lease pool's rule")
    print(
        f"{'seed':>4} {'specs':>5} {'bound':>8} {'packed':>8} {'exclusive':>9} {'packed/bound':>12} "
        f"{'exclusive/packed':>16} {'workers':>7}"
    )
    for r in rows:
        print(
            f"{r['seed']:>4} {r['specs']:>5} {r['lower_bound_s']:>7.1f}s {r['packed_s']:>7.1f}s "
            f"{r['exclusive_s']:>8.1f}s {r['ratio_to_bound']:>12.3f} {r['speedup_over_exclusive']:>15.2f}x "
            f"{r['workers']:>7}"
        )
    worst = max(r["ratio_to_bound"] for r in rows)
    summary = {
        "worst_ratio_to_bound": worst,
        "median_speedup_over_exclusive": statistics.median(r["speedup_over_exclusive"] for r in rows),
        "target_ratio": TARGET_RATIO,
        "rows": rows,
    }
    verdict = (
        "within the target"
        if worst <= TARGET_RATIO
        else f"ABOVE THE TARGET on {sum(r['ratio_to_bound'] > TARGET_RATIO for r in rows)} of {len(rows)} workloads"
    )
    print(
        f"worst packed/bound {worst:.3f} (target <= {TARGET_RATIO}: {verdict}); median exclusive/packed "
        f"{summary['median_speedup_over_exclusive']:.2f}x"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2))
    return 0 if worst <= TARGET_RATIO else 1


if __name__ == "__main__":
    sys.exit(main())
