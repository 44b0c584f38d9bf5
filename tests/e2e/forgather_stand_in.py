#!/usr/bin/env python3
"""A stand-in for Forgather's `forgather` command: it accepts the command lines the forgather
profile builds and writes what Forgather writes.

    forgather -p PROJECT -t CONFIG train [--output-dir DIR] [--max-steps N] [--save-strategy S] ...
    forgather finalize SRC DEST --quantize RECIPE

train writes trainer_logs.json under runs/<name>/ (the loss falls from 4.0; a config that says
`diverge: true` makes it NaN from the third record, as a bad learning rate would), and with a
save strategy other than "no" a model dir `checkpoint-N/` holding config.json. finalize writes
DEST with `.bin` weights and a `quantization_config` block in config.json, refusing a SRC
that holds no config.json.
"""

import json
import os
import sys

argv = sys.argv[1:]
if argv[:1] == ["finalize"]:
    if len(argv) != 5 or argv[3] != "--quantize":
        sys.exit(f"usage: forgather finalize SRC DEST --quantize RECIPE; got {argv}")
    source, dest, recipe = argv[1], argv[2], argv[4]
    with open(os.path.join(source, "config.json")) as stream:
        config = json.load(stream)
    os.makedirs(dest)
    config["quantization_config"] = {"quant_method": recipe, "source": source}
    with open(os.path.join(dest, "config.json"), "w") as stream:
        json.dump(config, stream)
    with open(os.path.join(dest, "pytorch_model.bin"), "wb") as stream:
        stream.write(b"\0" * 64)
    print(f"finalized {source} into {dest} ({recipe})")
    sys.exit(0)
if argv[:1] != ["-p"] or argv[2:3] != ["-t"] or argv[4:5] != ["train"]:
    sys.exit(f"usage: forgather -p PROJECT -t CONFIG train [options]; got {argv}")
project, config = argv[1], argv[3]
options = dict(zip(argv[5::2], argv[6::2], strict=False))
out = options["--output-dir"]
steps = int(options.get("--max-steps", "30"))
diverge = "diverge: true" in open(os.path.join(project, config)).read()
run = os.path.join(out, "runs", "run_0")
os.makedirs(run)
records = [
    {"global_step": s, "loss": float("nan") if diverge and s > 10 else 4.0 - s / 10} for s in range(5, steps + 5, 5)
]
records.append({"global_step": steps, "train_runtime": 1.0})
with open(os.path.join(run, "trainer_logs.json"), "w") as stream:
    json.dump(records, stream)
if options.get("--save-strategy", "no") != "no":
    model = os.path.join(out, f"checkpoint-{steps}")
    os.makedirs(model)
    with open(os.path.join(model, "config.json"), "w") as stream:
        json.dump({"model_type": "stand-in", "steps": steps}, stream)
print(f"trained {steps} steps")
