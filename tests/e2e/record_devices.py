"""A stand-in training run for scheduling tests: records its devices and when it ran."""

import argparse
import json
import os
import time

parser = argparse.ArgumentParser()
parser.add_argument("--trace", required=True)
parser.add_argument("--sleep", type=float, default=0.3)
parser.add_argument("--name", required=True)
# Then keep the devices until a spec named so waits in this lease state file (90 s at most).
parser.add_argument("--until-waiting", nargs=2, metavar=("STATE_FILE", "NAME_PREFIX"))
args = parser.parse_args()
start = time.time()
time.sleep(args.sleep)
while args.until_waiting and time.time() - start < 90:
    state_file, prefix = args.until_waiting
    try:
        queue = json.load(open(state_file))["queue"]
    except (OSError, ValueError, KeyError):
        queue = []
    if any(waiter["name"].startswith(prefix) for waiter in queue):
        break
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
