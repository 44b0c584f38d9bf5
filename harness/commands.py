"""The commands around runs, as opposed to running them: the spec schema, reports, baseline
tolerances, `init`, perplexity scoring and the built-in server. Each takes the parsed
arguments and returns an exit code; bad input raises UsageError (exit 2, one line)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NOTHING_RAN, EXIT_INTERRUPTED = 0, 1, 2, 5, 130


class UsageError(Exception):
    """Bad input from the command line or the specs: printed as one line each, exit 2."""


def cmd_schema(args: argparse.Namespace) -> int:
    from harness.project.schema import json_schema, markdown_reference, settings_reference

    if args.settings:
        print(settings_reference(), end="")
    else:
        print(markdown_reference() if args.markdown else json.dumps(json_schema(), indent=2))
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from harness.records import load_document
    from harness.report.summary import label_problem, render_html, render_markdown

    documents = []
    for given in args.results:
        try:
            documents.append(load_document(Path(given)))
        except (OSError, ValueError) as error:
            # Both name the file (a run directory's results.json, not just what was given).
            raise UsageError(str(error)) from None
    labels = args.label or None
    if labels and (why := label_problem(labels, len(documents))):
        raise UsageError(why)
    if args.markdown:
        _write_report(Path(args.markdown), render_markdown(documents, labels))
    else:
        print(render_markdown(documents, labels))
    if args.html:
        _write_report(Path(args.html), render_html(documents, base_dir=Path(args.html).resolve().parent, labels=labels))
    return EXIT_OK


def _write_report(path: Path, text: str) -> None:
    try:
        path.write_text(text)
    except OSError as error:
        raise UsageError(f"cannot write {path}: {error.strerror}") from None
    print(f"wrote {path}", file=sys.stderr)


def cmd_init(args: argparse.Namespace) -> int:
    from harness.project.scaffold import init

    try:
        done = init(Path(args.dir), force=args.force)
    except (OSError, ValueError) as error:
        raise UsageError(str(error)) from None
    for name in done.wrote:
        print(f"wrote {name}")
    for name in done.kept:
        print(f"kept {name}")
    for advice in done.advice:
        print(advice, end="")
    print(
        "next: put your training command in specs/train_smoke.yaml, then run\n    python -m harness "
        "validate\n    nox -s smoke"
    )
    return EXIT_OK


def cmd_perplexity(args: argparse.Namespace) -> int:
    from harness.inference import perplexity

    scorer = args.scorer or os.environ.get("TRAINSPEC_SCORER") or perplexity.DEFAULT_SCORER
    try:
        model, tokenizer = perplexity.load_scorer(scorer)
    except perplexity.ScorerUnavailable as error:
        raise UsageError(str(error)) from None
    texts = args.texts or [line.rstrip("\n") for line in sys.stdin]
    for text in texts:
        value, tokens = perplexity.score(model, tokenizer, text)
        print(f"{value:.4g}\t{tokens}\t{text}", flush=True)
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from harness.inference import server as serve

    if problem := serve.argument_problem(args):
        raise UsageError(problem)
    serve.serve(args)
    return EXIT_OK


def cmd_baseline(args: argparse.Namespace) -> int:
    from harness.checks.baseline import recommend
    from harness.records import load_document

    if len(args.runs) < 2:
        raise UsageError(
            f"baseline recommend needs at least two runs of the same specs to see their noise, found {len(args.runs)}"
        )
    try:
        documents = [load_document(Path(given)) for given in args.runs]
    except (OSError, ValueError) as error:
        raise UsageError(str(error)) from None
    print("\n".join(recommend(documents)))
    return EXIT_OK
