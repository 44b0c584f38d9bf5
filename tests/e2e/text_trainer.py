"""A trainer that prints its loss only as text, in the line shapes of a well-known trainer, and takes
its overrides as nanoGPT's configurator does: `--key_name=value` (underscores, `=`, Python literals).

It logs nothing to a file and cannot be told to: the spec must read its stdout. The loss falls
smoothly from about 5 towards 1; the state saved every `save_interval` iterations lets a run
resume where it was stopped (and `init_from=scratch` after a stop is the bug a resume check
catches).

    python text_trainer.py --out_dir=/tmp/o --preset=megatron --max_iters=40 --nan_at=12
"""

from __future__ import annotations

import ast
import json
import math
import sys
import time
from pathlib import Path

ESC = "\x1b"
config = {
    "out_dir": "out",
    "preset": "nanogpt",
    "max_iters": 30,
    "eval_interval": 10,
    "save_interval": 10,
    "init_from": "scratch",
    "nan_at": 0,
    "sleep": 0.0,
}


def configure(argv: list[str]) -> None:
    """nanoGPT's configurator, in short: only `--key=value` with a known key; the value a Python literal."""
    for arg in argv:
        if not arg.startswith("--") or "=" not in arg:
            sys.exit(f"text_trainer: expected --key=value, got {arg!r}")
        key, value = arg[2:].split("=", 1)
        if key not in config:
            sys.exit(f"text_trainer: unknown config key {key!r}")
        try:
            config[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            config[key] = value


def loss_at(step: int) -> float:
    return 1.0 + 4.0 * math.exp(-step / 12)


def line(preset: str, step: int, loss: float) -> str:
    total = config["max_iters"]
    if preset == "nanogpt":
        return f"iter {step}: loss {loss:.4f}, time 12.30ms, mfu 1.20%"
    if preset == "torchtitan":
        return (
            f"{ESC}[31mstep: {step:2}  {ESC}[32mloss: {loss:7.4f}  {ESC}[33mgrad_norm:  3.1406  "
            f"{ESC}[34mmemory: 1.21GiB(2.08%)  {ESC}[35mtps: 1,234  {ESC}[36mtflops: 5.12  {ESC}[35mmfu: 1.23%{ESC}[39m"
        )
    if preset == "megatron":
        return (
            f" iteration {step:8d}/{total:8d} | consumed samples: {step * 64:12d} | elapsed time per iteration (ms):"
            f" 123.4 | learning rate: 1.000000E-04 | global batch size:    64 | lm loss: {loss:.6E} |"
            " loss scale: 1.0 | grad norm: 3.456 | number of skipped iterations:   0 | number of nan iterations:   0 |"
        )
    return f"step {step:4d}/{total} | train loss {loss:.6f} | norm 15.7302 | lr 6.00e-06 | (123.45 ms | 41234 tok/s)"


def eval_line(preset: str, step: int, loss: float) -> str | None:
    if preset == "nanogpt":
        return f"step {step}: train loss {loss:.4f}, val loss {loss + 0.05:.4f}"
    if preset == "megatron":
        return f" validation loss at iteration {step} | lm loss value: {loss + 0.05:.6E} | lm loss PPL: 1.0E+01 | "
    if preset == "llmc":
        return f"val loss {loss + 0.05:.6f}"
    return None


def main() -> None:
    configure(sys.argv[1:])
    out = Path(config["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    state = out / "ckpt.json"
    first = json.loads(state.read_text())["iter"] + 1 if config["init_from"] == "resume" else 1
    print(f"Overriding config with {' '.join(sys.argv[1:])}", flush=True)
    for step in range(first, config["max_iters"] + 1):
        loss = math.nan if step == config["nan_at"] else loss_at(step)
        print(line(config["preset"], step, loss), flush=True)
        if step % config["eval_interval"] == 0 and (text := eval_line(config["preset"], step, loss)):
            print(text, flush=True)
        if step % config["save_interval"] == 0:
            state.write_text(json.dumps({"iter": step}))
        time.sleep(config["sleep"])


if __name__ == "__main__":
    main()
