"""The scaffolding the end-to-end files share: write a spec, run the real harness in a project (to its end or in
the background), check its exit code and that it printed no traceback, wait on it, and end what it left running.

Every spec written here carries a tag in its command line, so that `tagged(tag)` finds whatever a run left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import yaml

from harness.records import load_results

from ..conftest import tagged
from ..gpu_stand_ins import install_nvidia_smi, install_rocm_smi

FAKE_SERVER = Path(__file__).with_name("fake_server.py")
# Stands in for a training run that saves a checkpoint (argv: tag, output dir). Braces are doubled: single ones
# are placeholders.
SAVES_CHECKPOINT = (
    "import pathlib, sys; c = pathlib.Path(sys.argv[2], 'checkpoint'); c.mkdir(); "
    "(c / 'config.json').write_text('{{}}')"
)


def new_tag() -> str:
    return f"trainspec-fault-{uuid.uuid4().hex[:8]}"


# specs -------------------------------------------------------------------------------------


def write_spec(folder: Path, spec_id: str, code: str, tag: str, *after: str, **fields: object) -> Path:
    """A spec whose run is `python -c CODE TAG OUTPUT_DIR AFTER...`, on one (fake) device so that it holds a
    lease; `fields` add to or replace the spec's own, and one given as None is left out."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = {
        "id": spec_id,
        "command": ["{python}", "-c", code, tag, "{output_dir}", *after],
        "gpus": 1,
        "cpu_ok": True,
        "timeout": 60,
        "min_steps_logged": 0,
        **fields,
    }
    path = folder / f"{spec_id}.yaml"
    path.write_text(yaml.safe_dump({key: value for key, value in spec.items() if value is not None}, sort_keys=False))
    return path


def cpu_spec(folder: Path, spec_id: str, code: str, tag: str, *after: str, **fields: object) -> Path:
    """A `gpus: 0` spec (no lease: only the harness knows its process group; `cpu_ok` would mean nothing)."""
    return write_spec(folder, spec_id, code, tag, *after, gpus=0, cpu_ok=None, **fields)


def serving_spec(
    folder: Path, mode: str, *, training: str = SAVES_CHECKPOINT, timeout: float = 60, server_timeout: float = 30
) -> tuple[Path, str]:
    """A spec whose training is instant and whose server is fake_server.py in `mode`; returns (file, tag)."""
    tag = new_tag()
    inference = {
        "server": ["{python}", str(FAKE_SERVER), "--port", "{port}", "--mode", mode, "--tag", tag],
        "prompt": "the small cat",
        "max_tokens": 5,
        "perplexity_max": 10,
        "server_timeout": server_timeout,
    }
    spec_id = f"serve_{mode.replace('-', '_')}"
    path = cpu_spec(
        folder,
        spec_id,
        training,
        tag,
        timeout=timeout,
        expected_files=["checkpoint/config.json"],
        inference=inference,
    )
    return path, tag


def serve(harness: Callable, scorer: str, folder: Path, mode: str, code: int = 1, **fields: Any) -> tuple[dict, str]:
    """Run the serving spec of `mode` (serving_spec's `fields`) from `folder`: its record and the output, once the
    harness has exited with `code` and nothing of the run is left."""
    path, tag = serving_spec(folder, mode, **fields)
    run = harness("run", str(path), "--scorer", scorer, cwd=folder)
    assert run.code == code, run.output
    assert tagged(tag) == []
    return run.spec(path.stem), run.output


def git_project(folder: Path, code: str) -> Path:
    """A committed git repository with one spec whose run is `python -c CODE`, in the repository."""
    (folder / "specs").mkdir(parents=True)
    spec = {"id": "writes", "command": ["{python}", "-c", code], "gpus": 0, "timeout": 60, "min_steps_logged": 0}
    (folder / "specs" / "writes.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    for argv in (
        ["init", "-q"],
        ["add", "."],
        ["-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "init"],
    ):
        subprocess.run(["git", *argv], cwd=folder, check=True)
    return folder


# the machine a run sees --------------------------------------------------------------------


def harness_env(tmp_path: Path) -> dict[str, str]:
    """As the `harness` fixture runs it (for the cases that need the process itself)."""
    return {**os.environ, "TRAINSPEC_CACHE_DIR": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}


def machine(tmp_path: Path, nvidia: dict | None = None, rocm: str | None = None) -> dict[str, str]:
    """The environment of a machine whose vendor tools are the stand-ins given, first on PATH.

    A tool not given is shadowed by one that finds no device, so the real tools of the
    machine the tests run on (if any) never answer.
    """
    bin_dir = tmp_path / "tools"
    install_nvidia_smi(bin_dir, **nvidia) if nvidia is not None else install_nvidia_smi(
        bin_dir, query="No devices were found\n", listing="No devices were found\n"
    )
    install_rocm_smi(bin_dir, rocm if rocm is not None else "{}")
    environ = {k: v for k, v in harness_env(tmp_path).items() if not k.endswith("_VISIBLE_DEVICES")}
    return {**environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


# running the harness -----------------------------------------------------------------------


def no_traceback(output: str) -> None:
    assert "Traceback" not in output and "INTERNALERROR" not in output, output


def harness_in(
    cwd: Path, env: dict[str, str], *args: str, timeout: float = 120, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """`python -m harness ARGS` (under the command `prefix`) run from `cwd` on the machine `env` describes."""
    return subprocess.run(
        [*prefix, sys.executable, "-m", "harness", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def expect_exit(done: subprocess.CompletedProcess[str], code: int) -> str:
    """The output of a harness that exited with `code`, once it is seen to hold no traceback."""
    output = done.stdout + done.stderr
    assert done.returncode == code, output
    no_traceback(output)
    return output


def run_harness_expecting(
    code: int,
    tmp_path: Path,
    *args: str,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 120,
) -> str:
    """`python -m harness ARGS` run to its end from `cwd` (tmp_path/project) with `env` (harness_env): its output,
    once it exited with `code` and printed no traceback."""
    done = harness_in(cwd or tmp_path / "project", env or harness_env(tmp_path), *args, timeout=timeout)
    return expect_exit(done, code)


def start(project: Path, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`python -m harness run ARGS` in the background, in a session of its own (its output: stdout, as text)."""
    return subprocess.Popen(
        [sys.executable, "-m", "harness", "run", *args],
        cwd=project,
        env=env or harness_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen, seconds: float = 90, every: float = 0.05) -> None:
    """Until `condition` holds, while `proc` runs (its output is the message if it exits or time runs out)."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0]
        time.sleep(every)


def kill_tagged(tag: str) -> None:
    for line in tagged(tag):
        try:
            os.kill(int(line.split(":")[0]), signal.SIGKILL)
        except ProcessLookupError:
            pass


def stop(tag: str, *procs: subprocess.Popen | None) -> None:
    """End what a test started: each harness still running (its whole group), then every process of the run."""
    for proc in procs:
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    kill_tagged(tag)


# what a run leaves -------------------------------------------------------------------------


def record(results: dict, spec_id: str) -> dict:
    return next(s for s in results["specs"] if s["id"] == spec_id)


def assert_clean(run_dir: Path, tag: str) -> dict:
    """Nothing of the run is left, no device is leased, results.json is ours; returns it.

    A holder whose owner is dead holds nothing (the pool's next reader drops it): a worker
    interrupted mid-release leaves one in the file.
    """
    assert tagged(tag) == []
    holders = json.loads((run_dir / "leases.json").read_text())["holders"]
    assert not [h for h in holders.values() if psutil.pid_exists(h["owner"][0])], holders
    return load_results(run_dir)


def run_one(harness: Callable, tmp_path: Path, spec_id: str, code: str, **fields: object) -> tuple[dict, str]:
    """Run one fault spec on one fake device; returns its record (after the clean-up checks) and the output."""
    tag = new_tag()
    path = write_spec(tmp_path / "project", spec_id, code, tag, **fields)
    run = harness("run", str(path), "--fake-gpus", "1", cwd=tmp_path / "project", timeout=120)
    assert run.code == 1, run.output
    return record(assert_clean(run.run_dir, tag), spec_id), run.output


def writes_log(tmp_path: Path, name: str, text: str, sleep: float = 0) -> str:
    """The code of a run that writes `text` as its log `name`, then sleeps (the text travels in a
    file: braces in a command are placeholders)."""
    source = tmp_path / f"log-{uuid.uuid4().hex[:8]}"
    source.write_text(text)
    return f"import shutil, sys, time; shutil.copy({str(source)!r}, sys.argv[2] + {'/' + name!r}); time.sleep({sleep})"
