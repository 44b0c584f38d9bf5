"""`python -m harness logs sniff FILE`: the `log:` block that reads a trainer's printed output."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

EXIT_OK, EXIT_NOTHING, EXIT_USAGE = 0, 1, 2


def add_parsers(commands: argparse._SubParsersAction) -> None:
    logs = commands.add_parser(
        "logs",
        help="training logs: which format reads a trainer's text output",
        description="Tools for `log:` in a spec (docs/trainer-logs.md).",
    )
    logs_commands = logs.add_subparsers(dest="logs_command", required=True, metavar="COMMAND")
    sniff = logs_commands.add_parser(
        "sniff",
        help="name the preset whose lines FILE prints, or propose patterns from the lines that mention a loss",
        description="Read the first lines of a log (a trainer's stdout saved to a file) and print the `log:` block"
        " that reads it: a preset (nanogpt, torchtitan, megatron, llmc) or format text with proposed patterns."
        " Exit 0 when one is found, 1 when no line shows a loss, 2 when FILE cannot be read.",
    )
    sniff.add_argument("file", metavar="FILE", help="the log file, e.g. a run's stdout.log")


def cmd_logs(args: argparse.Namespace) -> int:
    from harness.logs.sniff import sniff

    path = Path(args.file)
    if not path.is_file():
        print(f"error: {path}: no such file", file=sys.stderr)
        return EXIT_USAGE
    found = sniff(path)
    if found.preset:
        steps = f", steps {found.steps[0]:g} to {found.steps[-1]:g}" if found.steps else ""
        print(f"{path}: {found.preset} ({found.matched} loss lines in the first {found.lines}{steps})")
    elif found.patterns:
        print(f"{path}: no preset matches; {found.matched} lines read by these patterns (check the group names):")
    else:
        print(f"{path}: none of the first {found.lines} lines shows a loss", file=sys.stderr)
        return EXIT_NOTHING
    print("\n".join(found.spec_lines()))
    return EXIT_OK
