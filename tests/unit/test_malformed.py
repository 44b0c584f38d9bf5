"""Every file in tests/malformed is one mistake; `validate` must say which, in one located line.

The table below is the expected message of each file: (file name, field or None where the
mistake is the file as a whole, a fragment of the message, line or None).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.spec.files import load_specs

REPO = Path(__file__).resolve().parents[2]
MALFORMED = REPO / "tests" / "malformed"

# Mistakes validate once passed and the run then crashed on (issue 26): `run` refuses each as validate does
# (tests/e2e/test_faults_inputs.py).
REFUSED_BEFORE_RUNNING = [
    (
        "id_too_long.yaml",
        "id",
        "must be at most 128 characters (it names the run's folder and files), found 300",
        2,
    ),
    ("timeout_huge.yaml", "timeout", "expected a finite number, found an integer of 401 digits", 4),
    ("expected_files_double_star_in_name.yaml", "expected_files", "as in 'checkpoint/**/*.safetensors'", 4),
    ("log_path_double_star_in_name.yaml", "log.path", "'**' must be a whole path component", 5),
    ("expected_files_double_star_repeated.yaml", "expected_files", "'**' repeats itself ('**/**')", 4),
    ("placeholder_format_spec.yaml", "command", "placeholder {gpus:>200000000} has a format spec", 3),
    ("env_value_nul.yaml", "env", "MODE: holds a NUL character", 4),
    ("env_name_equals.yaml", "env", "'A=B' is no variable name", 4),
    ("command_nul.yaml", "command", "item 1 ('train.py\\x00--evil') holds a NUL character", 3),
    ("cwd_nul.yaml", "cwd", "holds a NUL character", 4),
    ("args_key_nul.yaml", "args", "'max\\x00steps': holds a NUL character", 4),
]

CASES = [
    ("unknown_key_close.yaml", "timout", "unknown key; did you mean 'timeout'?", 4),
    ("unknown_key_far.yaml", "frobnicate", "unknown key; known keys: args, args_style, baseline, command", 4),
    ("nested_unknown_key.yaml", "loss.final_maxx", "did you mean 'final_max'?", 5),
    ("duplicate_key.yaml", "timeout", "duplicate key (first at line 4)", 5),
    ("missing_id.yaml", "id", "required field is missing", 2),
    ("missing_command.yaml", "command", "required: the argv list", 2),
    ("command_wrong_type.yaml", "command", "found 42 (int)", 3),
    ("timeout_string.yaml", "timeout", "expected a number, found '300' (str)", 4),
    ("gpus_float.yaml", "gpus", "expected an integer, found 1.5 (float)", 4),
    ("cpu_ok_string.yaml", "cpu_ok", "expected true or false, found 'yes' (str)", 4),
    ("markers_string.yaml", "markers", "expected a list of strings, found 'smoke' (str)", 4),
    ("env_list.yaml", "env", "found a list", 4),
    (
        "args_mapping.yaml",
        "args",
        "optimizer: expected a string, number, boolean, null or a list of those, found a mapping",
        4,
    ),
    ("timeout_negative.yaml", "timeout", "must be greater than 0, found -5", 4),
    ("timeout_zero.yaml", "timeout", "must be greater than 0, found 0", 4),
    ("gpus_negative.yaml", "gpus", "must be at least 0, found -1", 4),
    ("nodes_zero.yaml", "nodes", "must be at least 1, found 0", 5),
    ("nodes_without_torchrun.yaml", "nodes", "a run across 2 nodes needs launcher: torchrun", 4),
    ("loss_min_over_max.yaml", "loss.final_min", "is greater than final_max", 6),
    ("metric_min_over_max.yaml", "metrics.grad_norm.min", "no value can pass", 6),
    ("metric_no_bound.yaml", "metrics.grad_norm.max", "give min, max or both", 5),
    ("expected_files_parent.yaml", "expected_files", "'../outside.txt' which escapes it", 4),
    ("expected_files_absolute.yaml", "expected_files", "absolute path '/etc/passwd'", 4),
    ("log_path_escape.yaml", "log.path", "must stay inside the output dir", 6),
    ("cwd_escape.yaml", "cwd", "must stay inside the repository", 4),
    ("regex_invalid.yaml", "stderr.forbidden_patterns", "'re:(' is not a valid regular expression", 5),
    ("placeholder_unknown.yaml", "command", "unknown placeholder {outdir}", 3),
    ("launcher_close.yaml", "launcher", "did you mean 'torchrun'?", 4),
    ("tier_misspelled.yaml", "tier", "found 'smok' (str)", 4),
    ("tier_contradicts_marker.yaml", "tier", "contradicts the marker 'slow'", 4),
    ("id_and_test_id.yaml", "id", "given twice, as 'id' and 'test_id'", 4),
    ("id_bad_chars.yaml", "id", "must start with a letter or digit", 2),
    ("project_dir_without_config.yaml", "project_dir", "only the forgather profile reads project_dir and config", 3),
    ("command_and_project_dir.yaml", "project_dir", "only the forgather profile reads project_dir and config", 4),
    ("forgather_torchrun.yaml", "launcher", "forgather starts its own ranks", 5),
    ("inference_without_server.yaml", "inference", "give inference.server", 4),
    ("stages_and_command.yaml", "stages", "give command or stages, not both", 4),
    ("stages_empty.yaml", "stages", "give at least one stage", 3),
    ("stages_duplicate_id.yaml", "stages[1].id", "duplicate stage id 'train', also stages[0]", 6),
    ("stages_interrupt_last.yaml", "stages[1].interrupt_at_step", "the last stage cannot be interrupted", 8),
    ("stages_resume_jump_first.yaml", "stages[0].loss.resume_jump_max", "the first stage has no stage before it", 7),
    ("stages_parity_later.yaml", "stages[0].parity.stage", "'straight' runs after this stage", 6),
    ("parity_self.yaml", "parity.spec", "a spec cannot be compared with itself", 4),
    ("parity_cycle.yaml", "parity", "parity cycle malformed_cycle_a -> malformed_cycle_b -> malformed_cycle_a", 4),
    ("parity_steps_reversed.yaml", "parity.steps", "FROM (40) is after TO (10)", 6),
    ("reproducible_without_repeat.yaml", "reproducible", "set repeat to 2 or more", 4),
    ("invalid_yaml.yaml", None, "invalid YAML", 4),
    ("empty.yaml", None, "found an empty file", 1),
    ("list_of_strings.yaml", None, "a spec is a YAML mapping of fields, found a str", 1),
    ("empty_list.yaml", None, "an empty list holds no spec", 1),
    ("list_second_bad.yaml", "gpus", "expected an integer, found 'two' (str)", 6),
    ("marker_unregistered.yaml", "markers", "'nightlyy' is not a registered marker", 4),
    ("retry_on_unknown_kind.yaml", "retry_on[1]", "found 'numerc' (str) (did you mean 'numeric'?)", 5),
    ("retry_on_string.yaml", "retry_on", "expected a list of 'infra', 'code', 'numeric', 'timeout', 'harness'", 5),
    ("log_pattern_invalid.yaml", "log.patterns[0]", "is not a valid regular expression: missing ), unterminated", 6),
    ("args_style_unknown.yaml", "args_style", "did you mean 'equals'?", 4),
    (
        "args_nested_without_hydra.yaml",
        "args",
        "optim: expected a string, number, boolean, null or a list of those, found a mapping"
        " (a mapping only with args_style: hydra",
        5,
    ),
    *REFUSED_BEFORE_RUNNING,
]


def _name(case) -> str:
    return case.values[0] if hasattr(case, "values") else case[0]


def test_the_table_and_the_folder_agree():
    on_disk = sorted(p.name for p in MALFORMED.iterdir() if p.suffix == ".yaml")
    assert sorted(_name(c) for c in CASES) == on_disk
    assert len(on_disk) >= 24


@pytest.mark.parametrize(("name", "field", "fragment", "line"), CASES)
def test_validate_names_file_field_and_line(name, field, fragment, line, capsys, monkeypatch):
    monkeypatch.chdir(REPO)  # the CLI reads registered markers from ./pyproject.toml
    path = MALFORMED / name
    code = main(["validate", str(path)])
    out, err = capsys.readouterr()
    assert code == 2
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert len(lines) == 1, err
    message = lines[0]
    where = f"error: {path}" + (f":{line}" if line is not None else "") + ": "
    assert message.startswith(where), message
    rest = message[len(where) :]
    if field is None:
        # A mistake of the file as a whole names no field: the message follows the location.
        _, errors = load_specs([path])
        assert [e.field for e in errors] == [None]
        assert rest == errors[0].message
    else:
        assert rest.startswith(f"{field}: "), message
    assert fragment in message


def test_validate_a_folder_of_malformed_specs_in_a_subprocess():
    proc = subprocess.run(
        [sys.executable, "-m", "harness", "validate", "tests/malformed"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    files = sorted(p.name for p in MALFORMED.iterdir() if p.suffix == ".yaml")
    assert len(lines) == len(files), proc.stderr
    for name in files:
        naming = [line for line in lines if line.startswith(f"error: tests/malformed/{name}:")]
        assert len(naming) == 1, (name, proc.stderr)


def test_validate_a_good_folder_exits_0(write, tmp_path, capsys, monkeypatch):
    write(
        "good/one.yaml",
        'id: one\ncommand: ["{python}", "train.py", "--out", "{output_dir}"]\nmarkers: [smoke]\ncpu_ok: true\n',
    )
    write(
        "good/forgather.yaml",
        "test_id: fg\nproject_dir: examples/tinylm\nconfig: tiny.yaml\nmarkers: [integration, slow]\n",
    )
    write(
        "good/nested/pair.yaml",
        "- id: two\n  command: [x]\n  markers: [cuda]\n- id: three\n  command: [y]\n  gpus: 0\n",
    )
    monkeypatch.chdir(REPO)
    code = main(["validate", str(tmp_path / "good")])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert err == ""
    assert out.strip() == "4 specs valid in 3 files"


def test_validate_counts_in_the_singular(write, tmp_path, capsys, monkeypatch):
    path = write("single.yaml", "id: one\ncommand: [x]\n")
    monkeypatch.chdir(tmp_path)
    assert main(["validate", str(path)]) == 0
    assert capsys.readouterr().out.strip() == "1 spec valid in 1 file"


def test_validate_reports_every_bad_file_not_just_the_first(write, tmp_path, capsys, monkeypatch):
    write("mixed/a.yaml", "id: a\ncommand: [x]\ntimeout: nope\n")
    write("mixed/b.yaml", "id: b\ncommand: [x]\n")
    write("mixed/c.yaml", "id: c\n")
    monkeypatch.chdir(tmp_path)
    assert main(["validate", "mixed"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert [line.split(":")[1].strip() for line in err] == ["mixed/a.yaml", "mixed/c.yaml"]
