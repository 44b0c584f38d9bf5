#!/usr/bin/env python3
"""A stand-in for Forgather's `forgather` command: it accepts the command line the forgather
profile builds and writes Forgather's log format, trainer_logs.json under runs/<name>/.

    forgather -p PROJECT -t CONFIG train [--output-dir DIR] [--max-steps N] ...

The loss falls from 4.0; a config that says `diverge: true` makes it NaN from the third
record, as a bad learning rate would.
"""

import json
import os
import sys

argv = sys.argv[1:]
if argv[:1] != ["-p"] or argv[2:3] != ["-t"] or argv[4:5] != ["train"]:
    sys.exit(f"usage: forgather -p PROJECT -t CONFIG train [options]; got {argv}")
project, config = argv[1], argv[3]
options = dict(zip(argv[5::2], argv[6::2], strict=False))
out = options["--output-dir"]
steps = int(options.get("--max-steps", "30"))
diverge = "diverge: true" in open(os.path.join(project, config)).read()
run = os.path.join(out, "runs", "run_0")
os.makedirs(run)
records = [{"global_step": s, "loss": float("nan") if diverge and s > 10 else 4.0 - s / 10} for s in range(5, steps + 5, 5)]
records.append({"global_step": steps, "train_runtime": 1.0})
with open(os.path.join(run, "trainer_logs.json"), "w") as stream:
    json.dump(records, stream)
print(f"trained {steps} steps")
