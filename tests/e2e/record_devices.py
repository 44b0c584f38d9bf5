"""A stand-in training run for scheduling tests: records its devices and when it ran."""

import argparse
import json
import os
import time

parser = argparse.ArgumentParser()
parser.add_argument("--trace", required=True)
parser.add_argument("--sleep", type=float, default=0.3)
parser.add_argument("--name", required=True)
# Then keep running until a run whose name starts so has started after this one (90 s at most).
parser.add_argument("--until-started", metavar="NAME_PREFIX")
args = parser.parse_args()
start = time.time()
# Each start, as it happens (the trace gets a run's record only once it ends).
with open(args.trace + ".started", "a") as started:
    started.write(json.dumps({"name": args.name, "start": start}) + "\n")


def started_since(prefix: str) -> bool:
    with open(args.trace + ".started") as started:
        runs = [json.loads(line) for line in started if line.endswith("\n")]
    return any(run["name"].startswith(prefix) and run["start"] > start for run in runs)


time.sleep(args.sleep)
while args.until_started and time.time() - start < 90 and not started_since(args.until_started):
    time.sleep(0.05)
record = {
    "name": args.name,
    "devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    "start": start,
    "end": time.time(),
    "threads": os.environ.get("OMP_NUM_THREADS"),
}
with open(args.trace, "a") as trace:
    trace.write(json.dumps(record) + "\n")
