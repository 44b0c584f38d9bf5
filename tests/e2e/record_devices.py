"""A stand-in training run for scheduling tests: records its devices and when it ran."""

import argparse
import json
import os
import time

parser = argparse.ArgumentParser()
parser.add_argument("--trace", required=True)
parser.add_argument("--sleep", type=float, default=0.3)
parser.add_argument("--name", required=True)
args = parser.parse_args()
start = time.time()
time.sleep(args.sleep)
record = {
    "name": args.name,
    "devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    "start": start,
    "end": time.time(),
    "threads": os.environ.get("OMP_NUM_THREADS"),
}
with open(args.trace, "a") as trace:
    trace.write(json.dumps(record) + "\n")
