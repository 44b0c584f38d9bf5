"""The reports a person reads: Markdown for CI summaries, the offline HTML page, its SVG curves."""

from __future__ import annotations

import json
import math
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from harness.records import RunDocument, SpecResult
from harness.report.summary import (
    combination_label,
    comparison_rows,
    render_html,
    render_markdown,
    summary_lines,
    write_run_report,
)
from harness.report.svg import curve_svg

RUN = Path("/runs/a")
EVIL = "<script>alert('x')</script>"


def spec(spec_id: str, outcome: str = "passed", torch: str = "2.5.1", **fields) -> dict:
    """A spec record as results.json holds it, with logs under RUN unless told otherwise."""
    record = {
        "id": spec_id,
        "outcome": outcome,
        "reason": "",
        "tier": "smoke",
        "duration": 10.0,
        "devices": ["0"],
        "final_loss": 1.0,
        "steps_logged": 3,
        "perplexity": None,
        "inference": [],
        "checks": [],
        "warnings": [],
        "paths": {"stdout": f"{RUN}/specs/{spec_id}/stdout.log", "stderr": f"{RUN}/specs/{spec_id}/stderr.log"},
        "loss_curve": [[1, 3.0], [10, 2.0], [20, 1.0]],
        "child_versions": {"torch": torch, "transformers": "4.46.0"},
        "stderr_tail": "",
        "regressions": [],
    }
    return record | fields


def raw(specs: list[dict], run_dir: Path = RUN, **meta) -> dict:
    """A results.json as written to disk."""
    return {
        "format": "trainspec-results/1",
        "created": "2025-01-01T00:00:00+00:00",
        "run_dir": str(run_dir),
        "versions": {"python": "3.11", "torch": "9.9.9", "transformers": "0.0.1", "cuda": None},
        "summary": {},
        "specs": specs,
        **meta,
    }


def document(specs: list[dict], run_dir: Path = RUN, **meta) -> RunDocument:
    """The same read back through the schema, as every report reads it."""
    return RunDocument.from_json(raw(specs, run_dir, **meta), "test.json")


@pytest.fixture
def first() -> RunDocument:
    return document(
        [
            spec("alpha", perplexity=3.0),
            spec(
                "beta",
                "failed",
                reason=f"loss too high {EVIL}",
                final_loss=None,
                stderr_tail=f"Traceback\n{EVIL}",
                loss_curve=[[1, 3.0], [2, None], [3, 2.5], [4, None], [5, 2.0]],
                checks=[
                    {
                        "name": "loss.final_max",
                        "passed": False,
                        "expected": "final loss <= 1.6",
                        "found": "nan at step 4",
                        "severity": "fail",
                    },
                    {
                        "name": "exit_code",
                        "passed": True,
                        "expected": "exit code 0",
                        "found": "exit code 0",
                        "severity": "fail",
                    },
                ],
                regressions=[
                    {"metric": "final_loss", "baseline": 1.0, "current": 1.5, "tolerance": 0.1, "severity": "fail"}
                ],
            ),
            spec("gamma", "skipped", reason="needs 2 devices", final_loss=None, loss_curve=[], duration=0.0),
        ]
    )


@pytest.fixture
def second() -> RunDocument:
    # Another combination: gamma did not run there, delta only ran there.
    return document(
        [
            spec("alpha", torch="2.6.0", final_loss=0.9, perplexity=3.5, duration=15.0),
            spec("beta", torch="2.6.0", final_loss=1.2),
            spec("delta", torch="2.6.0"),
        ],
        run_dir=Path("/runs/b"),
    )


class Structure(HTMLParser):
    """Checks that elements nest (every end tag closes the innermost open one) and collects what the tests read."""

    VOID = {"meta", "br", "hr", "img", "input", "link"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.ids: set[str] = set()
        self.hrefs: list[str] = []
        self.svgs: list[dict] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.handle_startendtag(tag, attrs)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        attributes = dict(attrs)
        self.ids.update([attributes["id"]] if "id" in attributes else [])
        self.hrefs += [attributes["href"]] if "href" in attributes else []
        if tag == "svg":
            self.svgs.append({"viewbox": [float(v) for v in attributes["viewbox"].split()], "points": [], "tags": []})
        if self.svgs and "svg" in self.stack + [tag]:
            self.svgs[-1]["tags"].append(tag)
            if tag == "polyline":
                self.svgs[-1]["points"] += [tuple(map(float, p.split(","))) for p in attributes["points"].split()]
            if tag == "circle":
                self.svgs[-1]["points"].append((float(attributes["cx"]), float(attributes["cy"])))

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(page: str) -> Structure:
    parser = Structure()
    parser.feed(page)
    parser.close()
    assert parser.errors == [] and parser.stack == [], (parser.errors, parser.stack)
    return parser


def assert_inside(svg: dict) -> None:
    x0, y0, width, height = svg["viewbox"]
    assert svg["points"], "no data drawn"
    for x, y in svg["points"]:
        assert x0 <= x <= x0 + width and y0 <= y <= y0 + height, (x, y, svg["viewbox"])


# ---------------------------------------------------------------- combinations and rows


def test_combination_label_prefers_what_the_children_imported(first: RunDocument) -> None:
    first.specs[2].child_versions = {"torch": "2.4.0", "transformers": "4.46.0"}
    assert combination_label(first) == "torch 2.5.1 · transformers 4.46.0"


def test_combination_label_falls_back_to_the_harness_pins_then_to_unknown() -> None:
    assert combination_label(document([spec("a", child_versions={})])) == "torch 9.9.9 · transformers 0.0.1"
    assert (
        combination_label(document([spec("a", child_versions={"torch": "2.7.0"})]))
        == "torch 2.7.0 · transformers 0.0.1"
    )
    assert combination_label(RunDocument([SpecResult("old", "passed")])) == "unknown versions"


def test_comparison_rows_union_in_first_seen_order_with_deltas_against_the_first(
    first: RunDocument, second: RunDocument
) -> None:
    rows = {row.spec_id: row for row in comparison_rows([first, second])}
    assert list(rows) == ["alpha", "beta", "gamma", "delta"]
    base, other = rows["alpha"].cells
    assert (base.loss_delta, base.perplexity_delta, base.duration_change) == (None, None, None)
    assert other.loss_delta == pytest.approx(-0.1) and other.perplexity_delta == pytest.approx(0.5)
    assert other.duration_change == pytest.approx(0.5)
    assert rows["gamma"].cells[1].outcome is None and rows["delta"].cells[0].outcome is None
    assert rows["delta"].cells[1].loss_delta is None  # nothing to compare with
    assert rows["beta"].failing and not rows["alpha"].failing
    assert rows["beta"].cells[1].loss_delta is None  # the first combination logged no finite final loss


# ---------------------------------------------------------------- Markdown


def table_row(markdown: str, spec_id: str) -> list[str]:
    line = next(line for line in markdown.splitlines() if line.startswith(f"| `{spec_id}`"))
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]


def test_markdown_table_has_one_column_per_combination_and_deltas_vs_the_first(
    first: RunDocument, second: RunDocument
) -> None:
    markdown = render_markdown([first, second])
    assert markdown.startswith("## ")
    assert "- **torch 2.5.1 · transformers 4.46.0**: ✅ 1 passed · ❌ 1 failed · ⏭️ 1 skipped" in markdown
    assert "- **torch 2.6.0 · transformers 4.46.0**: ✅ 3 passed" in markdown
    assert table_row(markdown, "alpha") == [
        "`alpha`",
        "✅ passed · loss 1 · ppl 3 · 10.0 s",
        "✅ passed · loss 0.9 (Δ −0.1) · ppl 3.5 (Δ +0.5) · 15.0 s (+50%)",
    ]
    assert table_row(markdown, "gamma") == ["`gamma`", "⏭️ skipped", "— not run"]
    assert table_row(markdown, "beta")[1] == "❌ failed · loss — · 10.0 s"
    assert table_row(markdown, "delta")[1] == "— not run"


def test_markdown_failures_list_reasons_and_regressions_without_raw_html(first: RunDocument) -> None:
    markdown = render_markdown([first])
    failures = markdown.split("### Failures", 1)[1]
    assert "`beta`: loss too high &lt;script&gt;" in failures
    assert "regression: final_loss 1 → 1.5 (+50%, allowed +10%, fail)" in failures
    assert "<script" not in markdown
    assert "gamma" not in failures


def test_markdown_escapes_pipes_and_line_breaks_in_cells() -> None:
    markdown = render_markdown([document([spec("a|b", "failed", reason="first line\n| second")])])
    assert table_row(markdown, "a\\|b")[0] == "`a\\|b`"
    assert "first line \\| second" in markdown


def test_markdown_reports_regressions_of_passing_specs_apart_from_failures(first: RunDocument) -> None:
    first.specs[0].regressions = [
        {"metric": "duration", "baseline": 10.0, "current": 20.0, "tolerance": 0.5, "severity": "warn"}
    ]
    regressions = render_markdown([first]).split("### Regressions", 1)[1]
    assert "`alpha`" in regressions and "duration 10 → 20 (+100%, allowed +50%, warn)" in regressions


# ---------------------------------------------------------------- HTML


def test_html_is_well_formed_escaped_and_failing_specs_come_first(first: RunDocument) -> None:
    page = render_html([first], base_dir=RUN)
    parsed = parse(page)
    assert page.startswith("<!doctype html>") and "<style>" in page
    assert "<script" not in page.lower() and "&lt;script&gt;" in page
    assert "http://" not in page.replace("http://www.w3.org/2000/svg", "") and "https://" not in page  # offline
    assert page.index('id="spec-beta"') < page.index('id="spec-alpha"') < page.index('id="spec-gamma"')
    assert {h[1:] for h in parsed.hrefs if h.startswith("#")} <= parsed.ids  # every anchor link lands
    text = " ".join(" ".join(parsed.text).split())
    assert "final loss <= 1.6 nan at step 4" in text and "1 of 2 checks passed" in text
    assert "regression: final_loss 1 → 1.5 (+50%, allowed +10%, fail)" in text
    assert "needs 2 devices" in text


def test_html_names_the_cluster_job_and_nodes_that_ran_a_spec(first: RunDocument) -> None:
    ran = document([spec("alpha", devices=[], placement="Slurm job 9 on gpu-a[17-18]")])
    text = " ".join(" ".join(parse(render_html([ran])).text).split())
    assert "placement Slurm job 9 on gpu-a[17-18]" in text


def test_html_has_one_curve_per_spec_that_logged_a_loss_and_draws_inside_it(first: RunDocument) -> None:
    parsed = parse(render_html([first]))
    assert len(parsed.svgs) == 2  # alpha and beta; skipped gamma logged nothing
    for svg in parsed.svgs:
        assert_inside(svg)
    beta = parsed.svgs[0]
    assert beta["tags"].count("polyline") == 0 and beta["tags"].count("circle") == 3  # every NaN splits the line


def test_html_links_logs_relative_to_base_dir_and_as_file_uris_elsewhere(first: RunDocument) -> None:
    first.specs[0].paths["server_stderr"] = "/elsewhere/server stderr.log"
    hrefs = parse(render_html([first], base_dir=RUN)).hrefs
    assert "specs/alpha/stdout.log" in hrefs and "specs/beta/stderr.log" in hrefs
    assert "file:///elsewhere/server%20stderr.log" in hrefs
    assert f"file://{RUN}/specs/alpha/stdout.log" in parse(render_html([first])).hrefs


def test_html_comparison_has_a_column_per_combination_and_a_line_per_combination(
    first: RunDocument, second: RunDocument
) -> None:
    parsed = parse(render_html([first, second], base_dir=RUN))
    text = " ".join(parsed.text)
    assert "torch 2.5.1 · transformers 4.46.0" in text and "torch 2.6.0 · transformers 4.46.0" in text
    assert "Δ −0.1" in text and "+50%" in text and "not run" in text
    alpha = next(svg for svg in parsed.svgs if svg["tags"].count("polyline") == 2)
    assert_inside(alpha)
    assert len(parsed.svgs) == 3  # alpha, beta, delta


def test_html_tells_apart_two_runs_of_one_combination(first: RunDocument) -> None:
    again = RunDocument(first.specs, run_dir="/runs/again")
    text = " ".join(parse(render_html([first, again])).text)
    assert "torch 2.5.1 · transformers 4.46.0 (a)" in text and "torch 2.5.1 · transformers 4.46.0 (again)" in text


def test_old_documents_without_newer_keys_still_render() -> None:
    old = RunDocument.from_json(
        {
            "format": "trainspec-results/1",
            "summary": {"passed": 1},
            "specs": [{"id": "old", "outcome": "passed", "loss_curve": [[1, 2.0]]}, {"id": "broke"}],
        },
        "old.json",
    )
    assert table_row(render_markdown([old]), "old")[1] == "✅ passed · loss —"
    assert "💥 error" in table_row(render_markdown([old]), "broke")[1]  # no outcome: it broke before deciding
    parsed = parse(render_html([old]))
    assert len(parsed.svgs) == 1 and parsed.svgs[0]["tags"].count("circle") == 1
    assert "1 passed" in " ".join(
        parse(
            render_html([RunDocument.from_json({"format": "trainspec-results/1", "summary": {"passed": 1}}, "f")])
        ).text
    )


def test_a_document_read_back_keeps_keys_this_version_does_not_know() -> None:
    data = raw([spec("a")], backend="local", argv=["--tier", "smoke"], repo_writes=[])
    document = RunDocument.from_json(data, "f")
    assert document.other == {"argv": ["--tier", "smoke"], "repo_writes": []}
    assert document.to_json() == data | {
        "tier": None,
        "devices": {},
        "interrupted": False,
        "specs": [SpecResult.from_json(spec("a")).to_json()],
    }


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        ("abc", 'specs: expected a list of spec records, found "abc"'),
        ([1, 2], "specs[0]: expected an object, found 1"),
        ([{"outcome": "passed"}], "specs[0].id: missing"),
        ([spec("a", duration="fast")], "specs[0] (spec 'a').duration: expected a number, found \"fast\""),
        ([spec("a", duration=True)], "specs[0] (spec 'a').duration: expected a number, found true"),
        ([spec("a", outcome="maybe")], "specs[0] (spec 'a').outcome: expected one of passed, failed, skipped, error"),
        (
            [spec("a", loss_curve=[[1, 2.0], [2]])],
            "specs[0] (spec 'a').loss_curve[1]: expected [step, value], found [2]",
        ),
        ([spec("a", loss_curve=[[1, "x"]])], "specs[0] (spec 'a').loss_curve[0][1]: expected a number"),
        ([spec("a", final_loss=float("nan"))], "specs[0] (spec 'a').final_loss: expected a finite number, found NaN"),
        ([spec("a", checks=["junk"])], "specs[0] (spec 'a').checks[0]: expected an object"),
        (
            [spec("a", regressions=[{}])],
            "specs[0] (spec 'a').regressions[0]: lacks baseline, current, metric, severity, tolerance",
        ),
        ([spec("a", warnings="oops")], "specs[0] (spec 'a').warnings: expected a list"),
        ([spec("a", devices=["0", 1])], "specs[0] (spec 'a').devices[1]: expected a string, found 1"),
        ([spec("a", metric_curves={"lr": "x"})], "specs[0] (spec 'a').metric_curves.lr: expected a list"),
    ],
)
def test_a_document_of_the_wrong_shape_is_refused_naming_file_and_field(specs: object, message: str) -> None:
    with pytest.raises(ValueError) as error:
        RunDocument.from_json(raw(specs), "runs/x/results.json")  # type: ignore[arg-type]
    assert str(error.value).startswith(f"runs/x/results.json: {message}"), str(error.value)


def test_documents_that_are_not_ours_are_refused() -> None:
    for data in ([], {"format": "other"}, {"specs": []}):
        with pytest.raises(ValueError, match="^f.json is not a trainspec results.json$"):
            RunDocument.from_json(data, "f.json")
    with pytest.raises(ValueError, match="^f.json: tier: expected a string, found 3$"):
        RunDocument.from_json(raw([], tier=3), "f.json")


@pytest.mark.parametrize(
    "specs", ["abc", [1, 2], [{"outcome": "passed"}], [{"id": "a", "outcome": "passed", "duration": "fast"}]]
)
def test_report_command_refuses_a_results_file_of_the_wrong_shape(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], specs: object
) -> None:
    from harness.cli import main

    path = tmp_path / "results.json"
    path.write_text(json.dumps(raw([]) | {"specs": specs}))
    assert main(["report", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(path) in err and "specs" in err, err
    assert main(["report", str(tmp_path)]) == 2  # the run directory names the same file
    assert str(path) in capsys.readouterr().err


def test_report_command_names_a_file_that_is_not_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from harness.cli import main

    (tmp_path / "results.json").write_text('{"format": "trainspec-results/1", "specs": [')
    assert main(["report", str(tmp_path)]) == 2
    assert f"{tmp_path / 'results.json'} is not JSON" in capsys.readouterr().err


def test_write_run_report_writes_the_page_atomically(tmp_path: Path, first: RunDocument) -> None:
    first.specs[0].paths = {"log": str(tmp_path / "specs" / "alpha" / "train_log.jsonl")}
    path = write_run_report(tmp_path, first)
    assert path == tmp_path / "report.html"
    assert 'href="specs/alpha/train_log.jsonl"' in path.read_text(encoding="utf-8")
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]
    # The plain JSON object goes through the same schema.
    assert write_run_report(tmp_path, first.to_json()).read_text(encoding="utf-8") == path.read_text(encoding="utf-8")
    with pytest.raises(ValueError, match="specs: expected a list"):
        write_run_report(tmp_path, first.to_json() | {"specs": "abc"})


# ---------------------------------------------------------------- SVG


def svg_of(series: list) -> dict:
    parsed = parse(curve_svg(series))
    assert len(parsed.svgs) == 1
    return parsed.svgs[0]


def test_svg_is_empty_when_no_point_has_a_finite_loss() -> None:
    assert curve_svg([]) == ""
    assert curve_svg([("a", [])]) == ""
    assert curve_svg([("a", [[1, None], [2, math.nan], [3, math.inf]])]) == ""


def test_svg_single_point_is_a_dot_in_the_middle() -> None:
    svg = svg_of([("a", [[5, 2.0]])])
    assert svg["tags"].count("circle") == 1 and "polyline" not in svg["tags"]
    assert_inside(svg)
    x0, y0, width, height = svg["viewbox"]
    ((x, y),) = svg["points"]
    assert x0 + 0.2 * width < x < x0 + 0.8 * width and y0 + 0.2 * height < y < y0 + 0.8 * height


def test_svg_constant_loss_is_a_flat_line_inside_the_box() -> None:
    svg = svg_of([("a", [[1, 0.0], [2, 0.0], [3, 0.0]])])
    assert_inside(svg)
    assert len({y for _, y in svg["points"]}) == 1


def test_svg_breaks_the_line_at_gaps_and_marks_them() -> None:
    page = curve_svg([("a", [[1, 4.0], [2, 3.0], [3, None], [4, 2.0], [5, 1.0]])])
    svg = svg_of([("a", [[1, 4.0], [2, 3.0], [3, None], [4, 2.0], [5, 1.0]])])
    assert svg["tags"].count("polyline") == 2 and len(svg["points"]) == 4
    assert "no finite loss at step 3" in page and "loss NaN or missing" in page
    assert_inside(svg)


def test_svg_axis_covers_steps_that_have_no_finite_loss() -> None:
    page = curve_svg([("a", [[1, 3.0]] + [[step, None] for step in range(10, 70, 10)])])
    assert ">60</text>" in page  # a run that diverged early still shows how far it went


def test_svg_several_series_get_a_legend_and_escaped_labels() -> None:
    page = curve_svg(
        [("torch <2.5>", [[1, 2.0], [2, 1.0]]), ("torch 2.6", [[1, 2.5], [2, 1.5]]), ("torch 2.7", [[1, None]])]
    )
    assert "torch &lt;2.5&gt;" in page and "<2.5>" not in page
    assert "torch 2.7 (no finite loss)" in page
    svg = svg_of([("a", [[1, 2.0], [2, 1.0]]), ("b", [[1, 2.5], [2, 1.5]])])
    assert svg["tags"].count("polyline") == 2
    assert_inside(svg)


def test_svg_survives_absurd_values_and_junk_points() -> None:
    svg = svg_of(
        [("a", [[1, 1e308], [2, -1e308], [3, 1.0], [4, 0.5], ["x", 1.0], [None, 2.0], [5], "junk", [True, 1.0]])]
    )
    assert svg["tags"].count("polyline") == 1 and len(svg["points"]) == 2
    assert_inside(svg)


def test_svg_scales_to_the_given_size() -> None:
    svg = svg_of([("a", [[0, 1e6], [1000, 1e-3]])])
    assert svg["viewbox"] == [0, 0, 560, 220]
    small = parse(curve_svg([("a", [[0, 1.0], [10, 0.5]])], width=300, height=120)).svgs[0]
    assert small["viewbox"] == [0, 0, 300, 120]
    assert_inside(small)


# ---------------------------------------------------------------- terminal


def test_summary_lines_align_specs_and_name_the_run_directory(tmp_path: Path) -> None:
    lines = summary_lines(
        [
            SpecResult("a", "passed", duration=1.5, devices=["0"], steps_logged=7, final_loss=1.11),
            SpecResult("bb", "failed", reason="loss.final_max: 3 > 2"),
            SpecResult("c", "passed", duration=2.0, placement="Slurm job 9 on node[1-2]", steps_logged=3),
        ],
        tmp_path,
    )
    assert lines[1].split() == ["PASS", "a", "1.5s", "0", "7", "1.11"]
    assert "  Slurm job 9 on node[1-2]  3  " in lines[3]
    assert lines[2].split()[:2] == ["FAIL", "bb"] and lines[2].endswith("loss.final_max: 3 > 2")
    assert lines[-1] == f"run directory: {tmp_path}"


# ---------------------------------------------------------------- log axis, other metrics, labels


def test_a_curve_spanning_more_than_a_decade_gets_a_log_axis() -> None:
    page = curve_svg([("a", [[1, 10.0], [2, 1.0], [3, 0.1], [4, 0.01]])])
    assert 'aria-label="loss (log scale) curve"' in page
    assert all(f">{tick}</text>" in page for tick in ("0.01", "0.1", "1", "10"))
    svg = svg_of([("a", [[1, 10.0], [2, 1.0], [3, 0.1], [4, 0.01]])])
    assert_inside(svg)
    ys = [y for _, y in svg["points"]]
    # Equal ratios are equal distances on a log axis.
    assert ys[1] - ys[0] == pytest.approx(ys[2] - ys[1], abs=0.2) == pytest.approx(ys[3] - ys[2], abs=0.2)


@pytest.mark.parametrize("values", [[5.0, 1.0], [10.0, 1.0], [3.0, 0.0, 0.001], [-1.0, 50.0]])
def test_a_curve_within_a_decade_or_touching_zero_keeps_a_linear_axis(values: list[float]) -> None:
    page = curve_svg([("a", [[i, v] for i, v in enumerate(values)])])
    assert "log scale" not in page and page


def test_the_page_draws_every_other_logged_metric_as_a_small_chart(first: RunDocument, second: RunDocument) -> None:
    first.specs[0].metric_curves = {
        "grad_norm": [[1, 2.0], [10, 1.5], [20, 1.0]],
        "learning_rate": [[1, 1e-3], [10, 1e-4], [20, 1e-5]],
    }
    second.specs[0].metric_curves = {"tokens_per_s": [[1, 900.0], [20, 950.0]]}
    page = render_html([first, second])
    parsed = parse(page)
    for name in ("grad_norm curve", "learning_rate (log scale) curve", "tokens_per_s curve"):
        assert f'aria-label="{name}"' in page
    small = [svg for svg in parsed.svgs if svg["viewbox"][2] == 280]
    assert len(small) == 3 and all(svg["tags"].count("polyline") == 1 for svg in small)
    for svg in small:
        assert_inside(svg)
    assert page.count('class="metrics"') == 1  # only alpha logged other metrics


def test_metric_curves_come_from_the_training_log_thinned_without_loss_or_step(tmp_path: Path) -> None:
    from harness.logs.formats import TrainingLog
    from harness.records import MAX_CURVE_POINTS, metric_curves

    log = TrainingLog(tmp_path / "log.jsonl", "jsonl", "loss", "step")
    for i in range(5000):
        log.add(
            {
                "step": i,
                "loss": 1.0,
                "epoch": i / 10,
                "grad_norm": 2.0 + i,
                "train_loss": 1.0,
                "learning_rate": "nan" if i == 3 else 0.1,
                "note": "x",
                "done": True,
            }
        )
    log.add({"step": 5000, "loss": 1.0, "grad_norm": float("inf")})
    log.add({"eval_loss": 3.0})  # not a training record: none of its numbers is a training metric
    curves = metric_curves(log, skip=["train_loss"])
    assert list(curves) == ["grad_norm", "learning_rate"]
    assert len(curves["grad_norm"]) <= MAX_CURVE_POINTS + 1 and curves["grad_norm"][-1] == [5000.0, None]
    steps = [step for step, _ in curves["grad_norm"][:-1]]
    assert curves["grad_norm"][0] == [0.0, 2.0] and all(value == step + 2 for step, value in curves["grad_norm"][:-1])
    assert len({b - a for a, b in zip(steps, steps[1:], strict=False)}) == 1  # an even sample of the steps
    assert [3.0, 0.1] not in curves["learning_rate"]  # a string is not a number to plot
    record = SpecResult("a", "passed", metric_curves=curves)
    assert SpecResult.from_json(json.loads(json.dumps(record.to_json()))) == record


def test_labels_name_the_runs_in_both_reports(first: RunDocument, second: RunDocument) -> None:
    markdown = render_markdown([first, second], ["main", "my branch"])
    assert "- **main**:" in markdown and "| spec | main | my branch (Δ vs first) |" in markdown
    text = " ".join(parse(render_html([first, second], labels=["main", "my branch"])).text)
    assert "main" in text and "my branch" in text and "torch 2.6.0" not in text


def test_report_command_prints_the_table_beside_the_html_and_takes_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from harness.cli import main
    from harness.records import write_results

    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        write_results(
            tmp_path / name,
            [SpecResult(id="tiny", outcome="passed", final_loss=1.0, duration=2.0, loss_curve=[[1, 2.0], [2, 1.0]])],
            {},
        )
    runs = [str(tmp_path / "a"), str(tmp_path / "b")]
    assert main(["report", *runs, "--html", str(tmp_path / "r.html"), "--label", "main", "--label", "branch"]) == 0
    out = capsys.readouterr()
    assert "| `tiny` |" in out.out and "**branch**" in out.out and "wrote" in out.err
    assert "branch" in (tmp_path / "r.html").read_text()
    for labels, message in (
        (["--label", "main"], "--label given 1 time for 2 results"),
        (["--label", "x", "--label", " "], "--label number 2 is empty"),
    ):
        assert main(["report", *runs, *labels]) == 2
        assert message in capsys.readouterr().err


def test_the_baseline_curve_is_drawn_under_the_runs_loss_curve(first: RunDocument) -> None:
    from harness.report.svg import BASELINE_COLOUR

    first.specs[0].baseline_curve = [[1, 2.8], [10, 1.9], [20, 1.1]]
    page = render_html([first])
    alpha = page[page.index('id="spec-alpha"') :]
    alpha = alpha[: alpha.index("</svg>")]
    assert alpha.index(f'stroke="{BASELINE_COLOUR}"') < alpha.index('stroke="#0072b2"')  # under the run's line
    assert ">baseline</text>" in alpha
    svg = parse(render_html([first])).svgs[1]  # beta first: it failed
    assert svg["tags"].count("polyline") == 2
    assert_inside(svg)
    assert BASELINE_COLOUR not in page[page.index('id="spec-beta"') : page.index('id="spec-alpha"')]


def test_a_record_built_in_memory_with_tuples_reads_as_its_json_would() -> None:
    record = SpecResult.from_json(
        {"id": "a", "outcome": "passed", "loss_curve": [(1, 2.0), (2, None)], "devices": ("0",), "duration": 3}
    )
    assert record.loss_curve == [[1.0, 2.0], [2.0, None]] and record.devices == ["0"] and record.duration == 3.0
    assert SpecResult.from_json(json.loads(json.dumps(record.to_json()))) == record
