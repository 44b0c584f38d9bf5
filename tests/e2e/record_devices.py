"""A stand-in training run for scheduling tests: records its devices and when it ran."""

import argparse
import json
import os
import time

parser = argparse.ArgumentParser()
parser.add_argument("--trace", required=True)
parser.add_argument("--sleep", type=float, default=0.3)
parser.add_argument("--name", required=True)
# Then keep the devices until a spec named so holds devices of this lease state file (90 s at most).
parser.add_argument("--until-holding", nargs=2, metavar=("STATE_FILE", "NAME_PREFIX"))
args = parser.parse_args()
start = time.time()
time.sleep(args.sleep)
while args.until_holding and time.time() - start < 90:
    state_file, prefix = args.until_holding
    try:
        holders = json.load(open(state_file))["holders"].values()
    except (OSError, ValueError, KeyError, AttributeError):
        holders = []
    if any(holder["name"].startswith(prefix) for holder in holders):
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
