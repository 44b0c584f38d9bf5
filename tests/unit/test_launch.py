"""harness.launch: a spec rendered into argv and environment, and what its children record as they run."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from harness.backends.local import LocalBackend, cpu_threads
from harness.backends.slurm import SlurmBackend
from harness.devices.visible import discover
from harness.launch import CHILD_VERSIONS_FILE, Launch, build_argv, build_launch
from harness.process import run_process
from harness.spec.files import spec_from_mapping


def spec(**fields):
    return spec_from_mapping(
        {"id": "run-me", "command": ["{python}", "train.py", "--out", "{output_dir}"], **fields}, Path("s.yaml")
    )


VALUES = {
    "python": "/venv/bin/python",
    "output_dir": "/runs/r1/specs/x",
    "run_dir": "/runs/r1",
    "repo": "/repo",
    "gpus": "2",
}


def launch_on_cpu(the_spec, output_dir: Path, repo: Path, run_dir: Path, devices=("cpu",), **options) -> Launch:
    """The spec's launch on a machine without a GPU."""
    placement = LocalBackend().place(the_spec, devices, discover(gpus=0, environ={}))
    return build_launch(the_spec, repo=repo, run_dir=run_dir, output_dir=output_dir, placement=placement, **options)


def test_build_argv_fills_placeholders_and_appends_args():
    argv = build_argv(spec(args={"max_steps": 5, "data": "{repo}/data", "fast": True}), VALUES, 1)
    assert argv == [
        "/venv/bin/python",
        "train.py",
        "--out",
        "/runs/r1/specs/x",
        "--max-steps",
        "5",
        "--data",
        "/repo/data",
        "--fast",
    ]


def test_build_argv_with_torchrun_drops_a_leading_python():
    argv = build_argv(spec(launcher="torchrun", cpu_ok=True, gpus=2), VALUES, 2)
    assert argv == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node=2",
        "train.py",
        "--out",
        "/runs/r1/specs/x",
    ]


def test_build_argv_with_torchrun_keeps_a_script_first():
    argv = build_argv(spec(command="train.py --gpus {gpus}", launcher="torchrun"), VALUES, 3)
    assert argv[:5] == [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=3"]
    assert argv[5:] == ["train.py", "--gpus", "2"]


def base_env() -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX", "CUDA_VISIBLE", "OMP_NUM"))
    }
    return {**env, "HF_HUB_OFFLINE": "caller-value"}


def test_build_launch_environment(tmp_path):
    inventory = discover(fake_gpus=4, environ={})
    the_spec = spec(
        env={"HF_DATASETS_OFFLINE": "0", "CACHE": "{run_dir}/cache", "RANK_HINT": 7, "CUDA_VISIBLE_DEVICES": "9"},
        cpu_ok=True,
        gpus=2,
        cwd="examples/tinylm",
        timeout=42,
    )
    run = build_launch(
        the_spec,
        repo=tmp_path,
        run_dir=tmp_path / "run",
        output_dir=tmp_path / "run" / "specs" / "run-me",
        placement=LocalBackend().place(the_spec, ("1", "3"), inventory),
        base_env=base_env(),
    )
    env = run.env
    assert env["CUDA_VISIBLE_DEVICES"] == "1,3"  # the lease decides, not the spec
    assert env["TRAINSPEC_DEVICE_KIND"] == "fake"
    assert env["HF_HUB_OFFLINE"] == "caller-value"  # the caller's setting is kept
    assert env["HF_DATASETS_OFFLINE"] == "0"  # the spec overrides a default
    assert env["CACHE"] == f"{tmp_path / 'run'}/cache"
    assert env["RANK_HINT"] == "7"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["TRAINSPEC_SPEC_ID"] == "run-me"
    assert env["TRAINSPEC_OUTPUT_DIR"] == str(tmp_path / "run" / "specs" / "run-me")
    cores = len(os.sched_getaffinity(0))
    assert env["OMP_NUM_THREADS"] == str(max(1, cores * 2 // 4))
    assert run.cwd == tmp_path / "examples/tinylm"
    assert run.timeout == 42
    assert run.output_dir == tmp_path / "run" / "specs" / "run-me"
    assert run.argv[0] == sys.executable and run.argv[-1] == str(run.output_dir)


def test_build_launch_on_cpu_hides_every_gpu(tmp_path):
    run = launch_on_cpu(spec(gpus=0), tmp_path / "o", tmp_path, tmp_path, base_env={"CUDA_VISIBLE_DEVICES": "0,1"})
    assert run.env["CUDA_VISIBLE_DEVICES"] == ""
    assert run.env["TRAINSPEC_DEVICE_KIND"] == "cpu"
    assert run.env["OMP_NUM_THREADS"] == str(len(os.sched_getaffinity(0)))


def test_build_argv_across_nodes_leaves_the_rendezvous_to_the_allocation():
    argv = build_argv(
        spec(launcher="torchrun", gpus=4, nodes=2, command="train.py --world {nodes}x{gpus}"),
        {**VALUES, "nodes": "2"},
        4,
    )
    assert argv == [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes=2",
        "--rdzv-backend=c10d",
        "--nproc-per-node=4",
        "train.py",
        "--world",
        "2x2",
    ]


def test_build_launch_under_slurm_counts_the_devices_the_job_asks_for(tmp_path):
    slurm = SlurmBackend.from_options({}, "")
    the_spec = spec(gpus=4, nodes=2, launcher="torchrun", command="t.py {gpus} {nodes}")
    run = build_launch(
        the_spec,
        repo=tmp_path,
        run_dir=tmp_path,
        output_dir=tmp_path / "o",
        placement=slurm.place(the_spec, (), slurm.inventory({})),
        base_env={"CUDA_VISIBLE_DEVICES": "7", "OMP_NUM_THREADS": "3"},
    )
    assert run.argv[-2:] == ["4", "2"] and (run.gpus, run.nodes) == (4, 2)
    # The job's devices and cores are Slurm's to give: the login node's must not leak in.
    assert "CUDA_VISIBLE_DEVICES" not in run.env and run.env["OMP_NUM_THREADS"] == "3"


def test_build_launch_passes_the_held_devices_to_torchrun(tmp_path):
    inventory = discover(fake_gpus=2, environ={})
    run = build_launch(
        spec(launcher="torchrun", gpus=2, cpu_ok=True),
        repo=tmp_path,
        run_dir=tmp_path,
        output_dir=tmp_path / "o",
        placement=LocalBackend().place(spec(launcher="torchrun", gpus=2, cpu_ok=True), ("0", "1"), inventory),
        base_env={},
    )
    assert "--nproc-per-node=2" in run.argv
    assert run.env["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_cpu_threads_share_the_cores_by_devices_held():
    cores = len(os.sched_getaffinity(0))
    four = discover(fake_gpus=4, environ={})
    assert cpu_threads(1, four) == max(1, cores // 4)
    assert cpu_threads(4, four) == cores
    assert cpu_threads(0, discover(gpus=0, environ={})) == cores


def test_a_launched_run_writes_no_bytecode_into_the_tree(tmp_path):
    def tree(name: str) -> Path:
        repo = tmp_path / name
        repo.mkdir()
        (repo / "helper.py").write_text("VALUE = 1\n")
        return repo

    # Without the harness's environment, importing the project's module writes bytecode beside it...
    plain = tree("plain")
    subprocess.run([sys.executable, "-c", "import helper"], cwd=plain, env=base_env(), check=True)
    assert list(plain.rglob("*.pyc")), "the check below would prove nothing"
    # ...with it, nothing lands in the project's tree.
    repo = tree("repo")
    the_spec = spec(command=["{python}", "-c", "import helper; print(helper.VALUE)"], gpus=0)
    run = launch_on_cpu(the_spec, tmp_path / "run" / "out", repo, tmp_path / "run", base_env=base_env())
    assert run_process(run).exit_code == 0
    assert run.stdout_path.read_text() == "1\n"
    assert sorted(p.name for p in repo.rglob("*")) == ["helper.py"]


def test_children_record_the_library_versions_they_import(tmp_path):
    """harness/child_site is first on every child's PYTHONPATH: at exit it writes what was imported,
    and the sitecustomize it shadows still runs."""
    libraries = tmp_path / "libs"
    libraries.mkdir()
    (libraries / "transformers.py").write_text("__version__ = '9.9.9'\n")
    (libraries / "sitecustomize.py").write_text("import os\nopen(os.environ['SHADOWED_MARK'], 'w').close()\n")
    out = tmp_path / "out"
    out.mkdir()
    env = {"PYTHONPATH": str(libraries), "SHADOWED_MARK": str(tmp_path / "mark")}
    the_spec = spec(id="versions", command=["{python}", "-c", "import transformers"], gpus=0, env=env)
    assert run_process(launch_on_cpu(the_spec, out, tmp_path, tmp_path, devices=())).exit_code == 0
    versions = json.loads((out / CHILD_VERSIONS_FILE).read_text())
    assert versions == {"python": platform.python_version(), "torch": None, "transformers": "9.9.9", "cuda": None}
    assert (tmp_path / "mark").exists()


def test_a_child_that_imports_neither_library_records_nothing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    the_spec = spec(id="plain", command=["{python}", "-c", "import json"], gpus=0)
    assert run_process(launch_on_cpu(the_spec, out, tmp_path, tmp_path, devices=())).exit_code == 0
    assert not (out / CHILD_VERSIONS_FILE).exists()


def test_args_styles():
    args = {"out_dir": "{output_dir}", "max_iters": 60, "compile": False, "fast": True, "skip": None, "ids": [1, 2]}
    values = {**VALUES, "output_dir": "/o"}
    assert build_argv(spec(args=args), values, 1)[4:] == [
        *["--out-dir", "/o", "--max-iters", "60", "--fast", "--ids", "1", "2"],
    ]
    assert build_argv(spec(args=args, args_style="equals"), values, 1)[4:] == [
        *["--out_dir=/o", "--max_iters=60", "--compile=False", "--fast=True", "--ids=1,2"],
    ]
    nested = {**args, "optim": {"lr": 0.1, "betas": [0.9, 0.95]}}
    assert build_argv(spec(args=nested, args_style="hydra"), values, 1)[4:] == [
        *["out_dir=/o", "max_iters=60", "compile=false", "fast=true", "ids=[1,2]"],
        *["optim.lr=0.1", "optim.betas=[0.9,0.95]"],
    ]


def test_a_stage_takes_the_spec_s_args_style_and_log_unless_it_has_its_own():
    from harness.runner.stages import stage_spec

    staged = spec_from_mapping(
        {
            "id": "s",
            "args_style": "equals",
            "log": {"format": "nanogpt"},
            "stages": [
                {"id": "train", "command": ["x"], "args": {"max_iters": 5}},
                {"id": "resume", "command": ["x"], "args_style": "hydra", "log": {"format": "llmc"}},
            ],
        },
        Path("s.yaml"),
    )
    train, resume = (stage_spec(staged, stage) for stage in staged.stages)
    assert (train.args_style, train.log.format) == ("equals", "nanogpt")
    assert (resume.args_style, resume.log.format) == ("hydra", "llmc")
