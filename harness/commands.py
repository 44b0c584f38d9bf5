"""The command line's grammar (every subcommand and its arguments, `build_parser`) and the commands
around runs, as opposed to running them: the spec schema, reports, baseline tolerances, `init`,
perplexity scoring and the built-in server. Each takes the parsed arguments and returns an exit
code; bad input raises UsageError (exit 2, one line)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from harness import backends
from harness.history import cli as history_cli
from harness.logs import cli as logs_cli
from harness.options import add_to_parser, for_command

# Runs per spec the report's trend charts draw.
HISTORY_RUNS = 50
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
    if args.trends is not None and not args.html:
        raise UsageError("report --history draws each spec's trend into the HTML report: give --html PATH too")
    if args.markdown:
        _write_report(Path(args.markdown), render_markdown(documents, labels))
    else:
        print(render_markdown(documents, labels))
    if args.html:
        trends = (
            _trends(args.trends, [spec.id for d in documents for spec in d.specs]) if args.trends is not None else None
        )
        page = render_html(documents, base_dir=Path(args.html).resolve().parent, labels=labels, trends=trends)
        _write_report(Path(args.html), page)
    return EXIT_OK


def _trends(where: str, spec_ids: list[str]) -> dict[str, list[tuple[str, str, list[list[float | None]]]]]:
    """Each spec's trend over its past runs, from the history at `where` ("" for the settings' or the default)."""
    from harness.history.location import LocationError, resolve
    from harness.history.queries import trends
    from harness.history.store import StoreError, open_store
    from harness.project.settings import load_settings

    try:
        url = resolve(where or load_settings(Path.cwd()).history, Path.cwd())
        if url.startswith("sqlite:") and not Path(url.removeprefix("sqlite:///")).exists():
            raise UsageError(f"report --history: no run history at {url.removeprefix('sqlite:///')}")
        store = open_store(url)
        try:
            return trends(store, list(dict.fromkeys(spec_ids)), HISTORY_RUNS)
        finally:
            store.close()
    except (LocationError, StoreError) as error:
        raise UsageError(f"report --history: {error}") from None


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


def _add_spec_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--specs", action="append", metavar="PATH", help="spec file or folder (repeatable; default: specs/)"
    )


def _add_run_options(parser: argparse.ArgumentParser, command: str) -> None:
    """The spec selection and the run options `command` takes: plan shows what run would do with the same flags."""
    _add_spec_options(parser)
    add_to_parser(parser, for_command(backends.run_options(), command))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m harness", description="trainspec: spec-driven end-to-end tests for ML training code."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    listing = commands.add_parser(
        "list",
        help="print every spec: id, tier, devices, markers, file",
        description="Print every spec: id, tier, devices, markers and file.",
    )
    _add_spec_options(listing)

    validate = commands.add_parser(
        "validate",
        help="check spec files or folders; exit 0 when all are valid, 2 otherwise",
        description="Check spec files or folders. Exit 0 when all are valid, 2 otherwise, with one line per problem.",
    )
    validate.add_argument("paths", nargs="*", metavar="PATH", help="spec files or folders (default: specs/)")

    plan = commands.add_parser(
        "plan",
        help="which specs run, on how many devices, in what order, and the makespan lower bound",
        description="Show the run plan without running anything.",
    )
    _add_run_options(plan, "plan")

    schema = commands.add_parser(
        "schema",
        help="print the JSON Schema of the spec format (or the field reference)",
        description="Print the JSON Schema of a spec file, generated from the loader's own definitions.",
    )
    schema.add_argument(
        "--markdown", action="store_true", help="print the field reference table (docs/spec-reference.md) instead"
    )
    schema.add_argument(
        "--settings",
        action="store_true",
        help="print the [tool.trainspec] keys of pyproject.toml instead (docs/adoption.md)",
    )

    init = commands.add_parser(
        "init",
        help="add trainspec to a repository: noxfile.py, specs/, [tool.trainspec]",
        description="Write a starter noxfile.py (or print the lines to add to an existing one), specs/ with one "
        "commented example spec and its JSON Schema, and the [tool.trainspec] section of pyproject.toml. "
        "Existing files are kept unless --force.",
    )
    init.add_argument(
        "dir", nargs="?", default=".", metavar="DIR", help="the repository root (default: the current directory)"
    )
    init.add_argument("--force", action="store_true", help="replace existing files")

    report = commands.add_parser(
        "report",
        help="compare runs: spec x combination table as Markdown (stdout) or HTML",
        description="One table of spec x run (e.g. torch x transformers combination): outcome, final loss, perplexity, "
        "duration, and the change against the first run given.",
    )
    report.add_argument(
        "results",
        nargs="+",
        metavar="RESULTS_OR_DIR",
        help="results.json files or run directories; the first is the reference",
    )
    report.add_argument(
        "--markdown",
        metavar="PATH",
        help="write the Markdown here instead of printing it (for a CI job summary, print and append: >> "
        '"$GITHUB_STEP_SUMMARY")',
    )
    report.add_argument("--html", metavar="PATH", help="write an offline HTML report here, loss curves included")
    report.add_argument(
        "--history",
        nargs="?",
        const="",
        dest="trends",
        metavar="PATH_OR_URL",
        help=f"add each spec's trend over its last {HISTORY_RUNS} runs (final loss, duration) from the run history to "
        "the HTML report (default store: the history setting, else history.sqlite under the trainspec cache)",
    )
    report.add_argument(
        "--label",
        action="append",
        metavar="NAME",
        help="name a run in the table and charts instead of its torch/transformers versions; repeatable, one per "
        "result in the order given",
    )

    perplexity = commands.add_parser(
        "perplexity",
        help="score texts as the inference stage does, to choose a perplexity_max",
        description="Print perplexity, scored tokens and text, one line per text, under the reference model the "
        "inference stage would use.",
    )
    perplexity.add_argument(
        "texts", nargs="*", metavar="TEXT", help="texts to score (default: one per line from stdin)"
    )
    perplexity.add_argument(
        "--scorer",
        metavar="MODEL",
        help="a local Hugging Face cache name or a path (default: TRAINSPEC_SCORER, else gpt2)",
    )

    serve = commands.add_parser(
        "serve",
        help="serve a Hugging Face causal-LM checkpoint with the OpenAI completions contract (what "
        "`inference.server: builtin` starts)",
        description="Serve a save_pretrained checkpoint: GET /health, POST /v1/completions; each request sampled from "
        "--seed.",
    )
    serve.add_argument(
        "--checkpoint", type=Path, required=True, help="folder saved by save_pretrained (model and tokenizer)"
    )
    serve.add_argument("--port", type=int, required=True, help="TCP port; 0 picks a free one (printed)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s)")
    serve.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --host that is not a loopback address (the server has no authentication)",
    )
    serve.add_argument(
        "--seed", type=int, default=0, help="sampling seed, reset for every request (default: %(default)s)"
    )
    serve.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default="auto",
        help="auto uses CUDA when it is visible (default: %(default)s)",
    )

    run = commands.add_parser(
        "run",
        help="run the specs through pytest; arguments it does not know go to pytest",
        description="Run specs as pytest items, sharded over devices. Arguments not listed here are passed to pytest "
        "(e.g. -k, -x, -v, or a spec file path[::id] to run that file wherever it is).",
    )
    _add_run_options(run, "run")

    baseline = commands.add_parser(
        "baseline",
        help="work with baseline runs: recommend tolerances from repeated runs",
        description="Tools for `run --baseline`.",
    )
    baseline_commands = baseline.add_subparsers(dest="baseline_command", required=True, metavar="COMMAND")
    recommend = baseline_commands.add_parser(
        "recommend",
        help="the spread of final loss, duration and loss curve across runs of the same specs, and tolerances "
        "that pass it",
        description="Read two or more runs of the same specs (e.g. the same commit run repeatedly) and print, "
        "per spec, the spread seen in final loss, duration and loss curve, with `baseline:` tolerances that "
        "would pass it.",
    )
    recommend.add_argument(
        "runs", nargs="+", metavar="RESULTS_OR_DIR", help="results.json files or run directories, at least two"
    )
    history_cli.add_parsers(commands)
    logs_cli.add_parsers(commands)
    return parser
