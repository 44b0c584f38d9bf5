"""harness.spec.model: defaults, aliases, the forgather profile, args rendering, tiers and loading folders."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.launch import build_argv, render_args
from harness.spec.files import check_markers, find_spec_files, load_spec_file, load_specs, spec_from_mapping
from harness.spec.model import BUILTIN_MARKERS, Spec
from harness.spec.typed_yaml import SpecError

FORGATHER_INFERENCE_SPEC = """\
test_id: my_project_inference
project_dir: examples/my_category/my_project
config: my_config.yaml
dynamic_args:
  max_steps: 500
  save_strategy: "steps"
loss:
  final_max: 5.0
  no_nan: true
stderr:
  forbidden_patterns: ["RuntimeError", "CUDA error", "Traceback"]
  warn_patterns: []
expected_files: [trainer_logs.json]
min_steps_logged: 5
inference:
  prompt: "Once upon a time"
  max_tokens: 50
  temperature: 0.7
  perplexity_max: 500.0
  server_timeout: 60
timeout: 900
gpu_requirement: 1
markers: [integration, slow]
"""


def load_one(write, text: str, name: str = "spec.yaml") -> Spec:
    specs = load_spec_file(write(name, text))
    assert len(specs) == 1
    return specs[0]


def test_a_minimal_spec_gets_the_documented_defaults(write):
    spec = load_one(write, 'id: tiny\ncommand: ["{python}", "train.py"]\n')
    assert spec.id == "tiny"
    assert spec.gpus == 1
    assert spec.timeout == 300
    assert spec.min_steps_logged == 1
    assert spec.cpu_ok is False
    assert spec.launcher == "none"
    assert spec.cwd == "."
    assert spec.args == {} and spec.env == {} and spec.markers == [] and spec.metrics == {}
    assert spec.stderr.forbidden_patterns == ["Traceback (most recent call last)"]
    assert spec.stderr.warn_patterns == []
    assert spec.expected_files is None
    assert spec.loss is None and spec.inference is None
    assert spec.log.format == "auto" and spec.log.loss_key == "loss" and spec.log.path is None
    assert spec.profile == "command"
    assert spec.line == 1
    assert spec.source.name == "spec.yaml"


def test_default_stderr_block_is_not_shared_between_specs(write):
    first = load_one(write, "id: a\ncommand: [x]\n", "a.yaml")
    second = load_one(write, "id: b\ncommand: [x]\n", "b.yaml")
    first.stderr.forbidden_patterns.append("mutated")
    assert second.stderr.forbidden_patterns == ["Traceback (most recent call last)"]


def test_a_command_string_is_split_shell_style(write):
    spec = load_one(write, "id: s\ncommand: \"{python} train.py --name 'two words'\"\n")
    assert spec.argv_template == ["{python}", "train.py", "--name", "two words"]


def test_forgather_aliases_are_read(write):
    spec = load_one(
        write,
        """
        test_id: aliased
        command: [x]
        dynamic_args: {max_steps: 3}
        gpu_requirement: 2
        """,
    )
    assert (spec.id, spec.args, spec.gpus) == ("aliased", {"max_steps": 3}, 2)


def test_the_forgather_profile_is_chosen_by_project_dir_and_config(write):
    spec = load_one(write, "test_id: fg\nproject_dir: examples/tinylm\nconfig: tiny.yaml\n")
    assert spec.profile == "forgather"
    assert spec.command is None
    assert spec.expected_files == ["trainer_logs.json"]
    assert spec.markers == ["integration"]
    assert spec.log.format == "forgather"
    argv = build_argv(spec, {"output_dir": "/out", "python": "/py"}, 1)
    assert argv == ["forgather", "-p", "examples/tinylm", "-t", "tiny.yaml", "train", "--output-dir", "/out"]


def test_forgather_profile_defaults_yield_to_the_spec(write):
    spec = load_one(
        write, "test_id: fg\nproject_dir: p\nconfig: c.yaml\nexpected_files: [model.safetensors]\nmarkers: [smoke]\n"
    )
    assert spec.expected_files == ["model.safetensors"]
    assert spec.markers == ["smoke"]


def test_the_forgather_inference_spec_loads_unchanged(write):
    spec = load_one(write, FORGATHER_INFERENCE_SPEC, "tiny_llama_inference.yaml")
    assert spec.id == "my_project_inference"
    assert spec.profile == "forgather"
    assert spec.project_dir == "examples/my_category/my_project"
    assert spec.config == "my_config.yaml"
    assert spec.args == {"max_steps": 500, "save_strategy": "steps"}
    assert spec.loss is not None and spec.loss.final_max == 5.0 and spec.loss.no_nan is True
    assert spec.loss.final_min is None and spec.loss.must_decrease is False
    assert spec.stderr.forbidden_patterns == ["RuntimeError", "CUDA error", "Traceback"]
    assert spec.stderr.warn_patterns == []
    assert spec.expected_files == ["trainer_logs.json"]
    assert spec.min_steps_logged == 5
    assert spec.inference is not None
    assert spec.inference.prompts == ["Once upon a time"]
    assert (spec.inference.max_tokens, spec.inference.temperature) == (50, 0.7)
    assert (spec.inference.perplexity_max, spec.inference.server_timeout) == (500.0, 60)
    assert spec.timeout == 900
    assert spec.gpus == 1
    assert spec.markers == ["integration", "slow"]
    assert spec.effective_tier == "full"
    argv = build_argv(spec, {"output_dir": "/runs/x", "python": "/py"}, 1)
    assert argv == [
        "forgather",
        "-p",
        "examples/my_category/my_project",
        "-t",
        "my_config.yaml",
        "train",
        "--output-dir",
        "/runs/x",
        "--max-steps",
        "500",
        "--save-strategy",
        "steps",
    ]


def test_render_args_rules():
    argv = render_args(
        {
            "max_steps": 60,
            "fast": True,
            "slow": False,
            "seed": None,
            "tags": ["a", "b"],
            "lr": 0.001,
            "name": "x_y",
            "flags": [True, False],
        }
    )
    assert argv == [
        "--max-steps",
        "60",
        "--fast",
        "--tags",
        "a",
        "b",
        "--lr",
        "0.001",
        "--name",
        "x_y",
        "--flags",
        "true",
        "false",
    ]


def test_render_args_keeps_zero_and_empty_string():
    assert render_args({"warmup": 0, "suffix": ""}) == ["--warmup", "0", "--suffix", ""]


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.from_regex(r"[a-z][a-z_]{0,8}", fullmatch=True), st.integers(-5, 5), max_size=5))
def test_render_args_every_integer_value_follows_its_flag(args):
    argv = render_args(args)
    assert len(argv) == 2 * len(args)
    for (key, value), flag, text in zip(args.items(), argv[::2], argv[1::2], strict=False):
        assert flag == "--" + key.replace("_", "-")
        assert text == str(value)


@pytest.mark.parametrize(
    ("tier", "markers", "effective", "all_markers"),
    [
        (None, [], "standard", ["integration"]),
        (None, ["smoke"], "smoke", ["smoke", "integration"]),
        (None, ["slow", "cuda"], "full", ["integration", "slow", "cuda"]),
        ("full", [], "full", ["integration", "slow"]),
        ("smoke", ["hf_trainer"], "smoke", ["smoke", "integration", "hf_trainer"]),
        ("standard", ["integration"], "standard", ["integration"]),
    ],
)
def test_effective_tier_and_all_markers(tier, markers, effective, all_markers):
    data = {"id": "t", "command": ["x"], "markers": markers}
    if tier:
        data["tier"] = tier
    spec = spec_from_mapping(data, Path("t.yaml"))
    assert spec.effective_tier == effective
    assert spec.all_markers == all_markers


def test_needs_log():
    def spec(**extra):
        return spec_from_mapping({"id": "n", "command": ["x"], **extra}, Path("n.yaml"))

    assert spec().needs_log
    assert not spec(min_steps_logged=0).needs_log
    assert spec(min_steps_logged=0, loss={"final_max": 1}).needs_log
    assert spec(min_steps_logged=0, metrics={"grad_norm": {"max": 1}}).needs_log


def test_a_file_may_hold_a_list_of_specs_each_with_its_line(write):
    path = write(
        "many.yaml",
        """
        - id: one
          command: [x]
        - id: two
          command: [y]
          gpus: 0
        """,
    )
    specs = load_spec_file(path)
    assert [(s.id, s.line, s.gpus) for s in specs] == [("one", 1, 1), ("two", 3, 0)]
    assert all(s.source == path for s in specs)


def test_find_spec_files_sorts_and_skips_hidden_folders(tmp_path):
    for name in ["b.yaml", "a.yml", "sub/c.yaml", ".hidden/d.yaml", "sub/.git/e.yaml", "notes.txt", ".f.yaml"]:
        path = tmp_path / "specs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("id: x\n")
    root = tmp_path / "specs"
    found = find_spec_files([root])
    assert [p.relative_to(root).as_posix() for p in found] == ["a.yml", "b.yaml", "sub/c.yaml"]
    # A file named directly is taken as it is, hidden or not.
    assert find_spec_files([root / ".hidden" / "d.yaml"]) == [root / ".hidden" / "d.yaml"]


def test_find_spec_files_reports_a_missing_path(tmp_path):
    with pytest.raises(SpecError, match="no such file or folder"):
        find_spec_files([tmp_path / "nowhere"])


def test_load_specs_reports_a_duplicate_id_naming_both_files(write, tmp_path):
    write("specs/a.yaml", "id: same\ncommand: [x]\n")
    write("specs/b.yaml", "# another\nid: same\ncommand: [y]\n")
    specs, errors = load_specs([tmp_path / "specs"])
    assert [s.source.name for s in specs] == ["a.yaml"]
    assert len(errors) == 1
    error = errors[0]
    assert error.field == "id"
    assert error.file == str(tmp_path / "specs" / "b.yaml")
    assert error.line == 2
    assert "duplicate id 'same'" in error.message
    assert f"{tmp_path / 'specs' / 'a.yaml'}:1" in error.message


def test_load_specs_collects_every_problem_not_just_the_first(write, tmp_path):
    write("specs/good.yaml", "id: good\ncommand: [x]\n")
    write("specs/bad1.yaml", "id: bad1\ncommand: [x]\ntimeout: -1\n")
    write("specs/bad2.yaml", "id: bad2\n")
    specs, errors = load_specs([tmp_path / "specs"])
    assert [s.id for s in specs] == ["good"]
    assert sorted(Path(e.file).name for e in errors) == ["bad1.yaml", "bad2.yaml"]


def test_load_specs_with_a_missing_path_is_one_error(tmp_path):
    specs, errors = load_specs([tmp_path / "nope"])
    assert specs == [] and len(errors) == 1 and "no such file" in errors[0].message


def test_check_markers_accepts_registered_and_builtin_markers(write):
    spec = load_one(write, "id: m\ncommand: [x]\nmarkers: [cuda, slow, smoke, integration]\n")
    check_markers(spec, ["cuda"])
    with pytest.raises(SpecError, match="'cuda' is not a registered marker") as caught:
        check_markers(spec, [])
    assert caught.value.field == "markers"
    for builtin in BUILTIN_MARKERS:
        check_markers(spec_from_mapping({"id": "b", "command": ["x"], "markers": [builtin]}, Path("b.yaml")), [])


def test_placeholders_in_args_are_checked(write):
    with pytest.raises(SpecError, match=r"unknown placeholder \{ouput_dir\}") as caught:
        load_one(write, "id: p\ncommand: [x]\nargs:\n  out: '{ouput_dir}/logs'\n")
    assert caught.value.field == "args"


def test_known_placeholders_and_escaped_braces_pass(write):
    spec = load_one(
        write,
        "id: p\ncommand: ['{python}', '-c', 'print({{1: 2}})', '{output_dir}', '{run_dir}', '{repo}', '{gpus}']\n",
    )
    assert spec.argv_template[2] == "print({{1: 2}})"


def test_a_misspelled_profile_is_refused(write):
    with pytest.raises(SpecError, match="found 'forgathr'") as caught:
        load_one(write, "id: p\nprofile: forgathr\ncommand: [x]\n")
    assert caught.value.field == "profile"
    assert caught.value.line == 2


def test_an_unknown_placeholder_in_env_is_refused_at_load(write):
    with pytest.raises(SpecError, match=r"unknown placeholder \{nope\}") as caught:
        load_one(write, "id: e\ncommand: [x]\nenv:\n  DATA: '{nope}/data'\n")
    assert caught.value.field == "env"
