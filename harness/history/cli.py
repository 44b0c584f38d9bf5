"""`python -m harness history` (trends, and `history import` of old run folders) and `python -m harness bisect`.

The parsers are added to the main one by `add_parsers`; bad input raises CommandError, which
the main command prints as one line (exit 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from harness.history.location import LocationError, resolve, shown
from harness.options import RUN_OPTIONS, add_to_parser, for_command


class CommandError(Exception):
    """Bad input to `history` or `bisect`: one line, exit 2."""


def add_parsers(commands: Any) -> None:
    history = commands.add_parser(
        "history",
        help="each spec's past runs commit by commit: outcome, a metric and its change, a sparkline; "
        "`history import RUN_DIR...` loads old run folders",
        description="Per spec, its last runs in commit order with outcome, the metric and its change, and a sparkline. "
        "`history import RUN_DIR...` appends run folders (their results.json) written before the history existed.",
    )
    history.add_argument("specs", nargs="*", metavar="SPEC", help="spec ids (default: every spec in the history)")
    history.add_argument(
        "--metric",
        default="final_loss",
        metavar="M",
        help="final_loss (default), perplexity, duration, peak_gpu_memory or any metric the training log carried",
    )
    history.add_argument("--last", type=int, default=20, metavar="N", help="runs per spec (default: %(default)s)")
    history.add_argument("--json", action="store_true", help="print JSON instead of the table")
    add_to_parser(history, for_command(RUN_OPTIONS, "history"))

    bisect = commands.add_parser(
        "bisect",
        help="find the commit that broke a spec: each commit run in a git worktree outside the repository",
        description="Binary search between a good and a bad commit. Each commit tested is checked out in a git "
        "worktree outside the repository (your tree is untouched) and the spec run there K times through "
        "`python -m harness run` with this harness and this interpreter. A commit where the spec cannot be "
        "loaded or run is skipped, as `git bisect skip` does.",
    )
    bisect.add_argument("spec", metavar="SPEC", help="the spec id")
    bisect.add_argument("--good", required=True, metavar="REF", help="a commit where the spec passes")
    bisect.add_argument("--bad", required=True, metavar="REF", help="a later commit where it fails")
    bisect.add_argument(
        "--runs",
        type=int,
        default=1,
        metavar="K",
        help="runs per commit; a commit is bad when at least half of its runs fail (default: 1)",
    )


def _store_url(args: argparse.Namespace) -> str:
    try:
        return resolve(args.history, Path.cwd())
    except LocationError as error:
        raise CommandError(str(error)) from None


def cmd_history(args: argparse.Namespace) -> int:
    from harness.history.store import StoreError, open_store

    if args.last < 1:
        raise CommandError(f"--last {args.last}: give at least 1")
    importing = args.specs[:1] == ["import"]
    url = _store_url(args)
    if not importing and url.startswith("sqlite:") and not Path(url.removeprefix("sqlite:///")).exists():
        raise CommandError(f"no run history at {url.removeprefix('sqlite:///')} (runs append to it as they end)")
    try:
        store = open_store(url)
    except StoreError as error:
        raise CommandError(str(error)) from None
    try:
        if importing:
            return _import(store, [Path(p) for p in args.specs[1:]])
        return _show(store, args)
    except StoreError as error:
        raise CommandError(str(error)) from None
    finally:
        store.close()


def _import(store: Any, folders: list[Path]) -> int:
    from harness.history.facts import rows
    from harness.records import load_document

    if not folders:
        raise CommandError("history import: name run folders or results.json files")
    documents = []
    for folder in folders:
        try:
            documents.append(load_document(folder))
        except (OSError, ValueError) as error:
            raise CommandError(f"history import: {error}") from None
    added = 0
    for folder, document in zip(folders, documents, strict=True):
        run, specs = rows(document)
        new = store.append(run, specs) is not None
        added += new
        print(f"{folder}: {len(specs)} spec runs {'added' if new else 'already in the history'}")
    print(f"{added} of {len(documents)} runs added to {shown(store.url)}")
    return 0


def _show(store: Any, args: argparse.Namespace) -> int:
    from harness.history.queries import series, sparkline, spec_ids
    from harness.report.summary import table

    known = spec_ids(store)
    if unknown := [s for s in args.specs if s not in known]:
        raise CommandError(f"not in the history: {', '.join(unknown)} (it holds {len(known)} specs)")
    chosen = args.specs or known
    found = {spec: series(store, spec, args.metric, args.last) for spec in chosen}
    if args.json:
        print(
            json.dumps(
                {"metric": args.metric, "specs": {s: [vars(p) for p in pts] for s, pts in found.items()}}, indent=1
            )
        )
        return 0
    for spec, points in found.items():
        values = [p.value for p in points]
        print(f"{spec}  {args.metric}  {sparkline(values)}  ({len(points)} runs)")
        rows = [("commit", "when", "outcome", args.metric, "change")]
        for p in points:
            outcome = p.outcome + (f" ({p.failure_kind})" if p.failure_kind else "")
            rows.append(
                (
                    (p.commit or "-")[:7],
                    p.created[:16].replace("T", " "),
                    outcome,
                    "-" if p.value is None else f"{p.value:.6g}",
                    "" if p.change is None else f"{p.change:+.1%}",
                )
            )
        print("\n".join("  " + line for line in table(rows)))
    if not found:
        print(f"the history at {shown(store.url)} holds no runs yet", file=sys.stderr)
    return 0


def cmd_bisect(args: argparse.Namespace) -> int:
    from harness.history.bisect import BisectError, bisect

    if args.runs < 1:
        raise CommandError(f"--runs {args.runs}: give at least 1")
    try:
        return bisect(Path.cwd(), args.spec, args.good, args.bad, args.runs, [str(p) for p in args.settings_specs])
    except BisectError as error:
        raise CommandError(str(error)) from None
