"""Patterns for the text that well-known trainers print, so their logs are read unchanged (`log.format: NAME`).

Each preset is a list of regular expressions whose named groups are the record's keys, as
a spec's own `patterns` are (harness/logs/text.py). Every preset names the training loss
`loss` and the step `step`. Fields after the loss are read wherever they sit on the line
(lookaheads), so a field a version of the trainer leaves out, or one it adds, changes
nothing else.
"""

from __future__ import annotations

# A number as trainers print it: 12, 2.1234, 1.034567E+01, 6.00e-06, 1,234, nan, inf, -inf.
NUMBER = r"(?:[-+]?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?i:nan|inf(?:inity)?))"


def _field(label: str, name: str, after: str = "") -> str:
    """An optional field anywhere later on the line: `label` then a number captured as `name`."""
    return rf"(?=(?:.*?{label}(?P<{name}>{NUMBER}){after})?)"


PRESETS: dict[str, tuple[str, ...]] = {
    # nanoGPT's train.py: `iter 10: loss 2.1234, time 12.30ms, mfu 1.20%`, and at evals
    # `step 50: train loss 1.9012, val loss 1.9534`.
    "nanogpt": (
        rf"\biter (?P<step>\d+): loss (?P<loss>{NUMBER})"
        + _field("time ", "time_ms", "ms")
        + _field("mfu ", "mfu", "%"),
        rf"\bstep (?P<step>\d+): train loss (?P<train_loss>{NUMBER}), val loss (?P<val_loss>{NUMBER})",
    ),
    # torchtitan (colour codes stripped first): `step:  1  loss: 12.2541  grad_norm:  3.1406
    # memory: 1.21GiB(2.08%)  tps: 1,234  tflops: 5.12  mfu: 1.23%`.
    "torchtitan": (
        rf"\bstep:\s*(?P<step>\d+)\s+loss:\s*(?P<loss>{NUMBER})"
        + _field(r"grad_norm:\s*", "grad_norm")
        + _field(r"memory:\s*", "memory_gib", r"\s*GiB")
        + _field(r"memory:\s*[^(]*\(", "memory_pct", "%")
        + _field(r"tps:\s*", "tps")
        + _field(r"tflops:\s*", "tflops")
        + _field(r"mfu:\s*", "mfu", "%"),
    ),
    # Megatron-LM: ` iteration       10/     100 | consumed samples:          640 | elapsed time per
    # iteration (ms): 123.4 | learning rate: 1.000000E-04 | global batch size:    64 | lm loss:
    # 1.034567E+01 | loss scale: 1.0 | grad norm: 3.456 | number of skipped iterations:   0 | ...`,
    # and at evaluations ` validation loss at iteration 100 | lm loss value: 9.87E+00 | lm loss PPL: ... |`.
    "megatron": (
        r"\biteration\s+(?P<step>\d+)/\s*\d+\s*\|"
        + _field(r"\|\s*lm loss:\s*", "loss")
        + _field(r"consumed samples:\s*", "consumed_samples")
        + _field(r"elapsed time per iteration \(ms\):\s*", "iteration_ms")
        + _field(r"learning rate:\s*", "learning_rate")
        + _field(r"global batch size:\s*", "global_batch_size")
        + _field(r"loss scale:\s*", "loss_scale")
        + _field(r"grad norm:\s*", "grad_norm")
        + _field(r"number of skipped iterations:\s*", "skipped_iterations")
        + _field(r"number of nan iterations:\s*", "nan_iterations"),
        rf"\bvalidation loss at iteration (?P<step>\d+)\b.*?\blm loss value:\s*(?P<val_loss>{NUMBER})"
        + _field(r"lm loss PPL:\s*", "val_ppl"),
    ),
    # llm.c: `step    1/74 | train loss 4.367631 | norm 15.7302 | lr 6.00e-06 | (123.45 ms | 41234 tok/s)`,
    # and at evaluations `val loss 4.123456` (no step on that line: its ordinal stands in).
    "llmc": (
        rf"\bstep\s+(?P<step>\d+)/\d+\s*\|\s*train loss (?P<loss>{NUMBER})"
        + _field(r"\|\s*norm ", "grad_norm")
        + _field(r"\|\s*lr ", "lr")
        + _field(r"\(\s*", "step_ms", r"\s*ms")
        + _field(r"\|\s*", "tokens_per_s", r"\s*tok/s"),
        rf"^\s*val loss (?P<val_loss>{NUMBER})",
    ),
}
