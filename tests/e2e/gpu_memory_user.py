"""A stand-in training run that "uses GPU memory": its child process writes what a stand-in
`nvidia-smi --query-compute-apps` reports (tests/gpu_stand_ins.py), phase by phase.

The usage comes from a grandchild of the harness (the leader's child), so only a sampler
that follows the whole process tree finds it. It also writes a line for a GPU that is not
the run's, which must not be counted.
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--apps", required=True, help="folder the stand-in nvidia-smi reads *.csv from")
parser.add_argument("--uuid", required=True, help="the run's GPU, as nvidia-smi names it")
parser.add_argument("--other-uuid", default="", help="a GPU that is not the run's")
parser.add_argument("--phases", required=True, help="MiB:seconds,... held in turn")
parser.add_argument("--child", action="store_true")
args = parser.parse_args()

if not args.child:
    sys.exit(subprocess.call([sys.executable, *sys.argv, "--child"]))

table = Path(args.apps) / f"{os.getpid()}.csv"
for phase in args.phases.split(","):
    mib, seconds = phase.split(":")
    lines = [f"{args.uuid}, {os.getpid()}, {mib}"] + (
        [f"{args.other_uuid}, {os.getpid()}, 999"] if args.other_uuid else []
    )
    partial = table.with_suffix(".partial")
    partial.write_text("\n".join(lines) + "\n")
    partial.replace(table)  # whole, never half-written, when nvidia-smi reads it
    time.sleep(float(seconds))
table.unlink()
