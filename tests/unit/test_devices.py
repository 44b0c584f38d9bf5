"""harness.devices: which devices a run may use, from flags, the caller's environment or nvidia-smi."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from harness import devices
from harness.backends import skip_reason as backend_skip_reason
from harness.backends.slurm import SlurmBackend
from harness.devices import DeviceError, Inventory, child_environment, discover, nvidia_smi_ids, parse_visible, skip_reason
from harness.specfiles import spec_from_mapping

A100_MIG_LISTING = """\
GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77)
  MIG 3g.20gb     Device  0: (UUID: MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f)
  MIG 3g.20gb     Device  1: (UUID: MIG-cd46a3ab-9c1a-5c4a-a7a4-8e4b9e64c6c5)
GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0)
GPU 2: NVIDIA A100-SXM4-40GB (UUID: GPU-11111111-2222-3333-4444-555555555555)
  MIG 7g.40gb     Device  0: (UUID: MIG-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee)
"""

def no_smi():
    raise AssertionError("nvidia-smi must not be consulted here")


def spec(gpus: int = 1, cpu_ok: bool = False, **fields):
    return spec_from_mapping({"id": "s", "command": ["x"], "gpus": gpus, "cpu_ok": cpu_ok, **fields}, Path("s.yaml"))


@pytest.fixture
def fake_smi(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Put an `nvidia-smi` executable that prints `listing` (and exits `code`) first on PATH."""

    def install(listing: str, code: int = 0) -> Path:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        script = bin_dir / "nvidia-smi"
        (tmp_path / "listing.txt").write_text(listing)
        script.write_text(f"#!/bin/sh\n[ \"$1\" = -L ] || exit 64\ncat '{tmp_path / 'listing.txt'}'\nexit {code}\n")
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
        monkeypatch.setenv("PATH", str(bin_dir) + os.pathsep + os.environ.get("PATH", ""))
        return script

    return install


def test_fake_gpus():
    inv = discover(fake_gpus=3, environ={"CUDA_VISIBLE_DEVICES": "7"}, smi=no_smi)
    assert inv == Inventory(("0", "1", "2"), "fake", "--fake-gpus 3")
    assert inv.count == 3
    assert "3 fake devices [0, 1, 2]" in inv.describe()


@pytest.mark.parametrize("bad", [0, -2])
def test_fake_gpus_must_be_positive(bad):
    with pytest.raises(DeviceError, match="--fake-gpus must be at least 1"):
        discover(fake_gpus=bad, environ={}, smi=no_smi)


def test_gpus_and_fake_gpus_together_are_refused():
    with pytest.raises(DeviceError, match="not both"):
        discover(gpus=1, fake_gpus=1, environ={}, smi=no_smi)


def test_gpus_without_a_caller_list_counts_from_zero():
    inv = discover(gpus=2, environ={}, smi=no_smi)
    assert (inv.ids, inv.kind) == (("0", "1"), "cuda")


def test_gpus_index_into_the_callers_list_never_around_it():
    inv = discover(gpus=2, environ={"CUDA_VISIBLE_DEVICES": "3,5,7"}, smi=no_smi)
    assert (inv.ids, inv.kind) == (("3", "5"), "cuda")
    assert "within CUDA_VISIBLE_DEVICES" in inv.source


def test_gpus_larger_than_the_callers_list_is_an_error():
    with pytest.raises(DeviceError, match=r"--gpus 3 asks for more devices than CUDA_VISIBLE_DEVICES='4,5' lists \(2\)"):
        discover(gpus=3, environ={"CUDA_VISIBLE_DEVICES": "4,5"}, smi=no_smi)


def test_gpus_with_an_empty_caller_list_is_an_error():
    with pytest.raises(DeviceError):
        discover(gpus=1, environ={"CUDA_VISIBLE_DEVICES": ""}, smi=no_smi)


def test_gpus_zero_means_cpu():
    assert discover(gpus=0, environ={"CUDA_VISIBLE_DEVICES": "0"}, smi=no_smi).kind == "cpu"
    with pytest.raises(DeviceError, match="--gpus must be 0 or more"):
        discover(gpus=-1, environ={}, smi=no_smi)


@pytest.mark.parametrize(
    ("value", "ids"),
    [
        ("0,1", ("0", "1")),
        (" 2, 3 ,", ("2", "3")),
        ("GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77,GPU-0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", ("GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77", "GPU-0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")),
        ("MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f", ("MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f",)),
        ("MIG-GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77/7/0", ("MIG-GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77/7/0",)),
    ],
)
def test_callers_visible_devices_are_handed_on_as_they_are(value, ids):
    inv = discover(environ={"CUDA_VISIBLE_DEVICES": value}, smi=no_smi)
    assert (inv.ids, inv.kind, inv.source) == (ids, "cuda", "CUDA_VISIBLE_DEVICES")


@pytest.mark.parametrize("value", ["", " ", ","])
def test_an_empty_visible_list_means_cpu(value):
    inv = discover(environ={"CUDA_VISIBLE_DEVICES": value}, smi=no_smi)
    assert (inv.ids, inv.kind) == (("cpu",), "cpu")
    assert "CPU only" in inv.describe()


def test_minus_one_hides_every_gpu():
    assert discover(environ={"CUDA_VISIBLE_DEVICES": "-1"}, smi=no_smi).kind == "cpu"


def test_without_flags_or_env_nvidia_smi_decides():
    assert discover(environ={}, smi=lambda: ("0", "1")) == Inventory(("0", "1"), "cuda", "nvidia-smi -L")
    assert discover(environ={}, smi=lambda: ()).kind == "cpu"


def test_parse_visible():
    assert parse_visible("") == ()
    assert parse_visible("1") == ("1",)
    assert parse_visible("-1") == ()
    assert parse_visible("0,-1,1") == ("0",)  # CUDA stops at the first invalid entry


def test_nvidia_smi_ids_reads_a_real_executable(fake_smi):
    fake_smi("GPU 0: Tesla T4 (UUID: GPU-aaaa)\nGPU 1: Tesla T4 (UUID: GPU-bbbb)\n")
    assert nvidia_smi_ids() == ("0", "1")


def test_nvidia_smi_ids_lists_mig_instances_instead_of_their_gpu(fake_smi):
    fake_smi(A100_MIG_LISTING)
    assert nvidia_smi_ids() == (
        "MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f",
        "MIG-cd46a3ab-9c1a-5c4a-a7a4-8e4b9e64c6c5",
        "1",
        "MIG-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee",
    )


def test_nvidia_smi_failing_means_no_gpu(fake_smi):
    fake_smi("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n", code=9)
    assert nvidia_smi_ids() == ()
    assert discover(environ={}).kind == "cpu"


def test_no_nvidia_smi_on_path_means_no_gpu(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert nvidia_smi_ids(runner=lambda *a, **k: pytest.fail("must not run")) == ()


def test_nvidia_smi_ids_with_an_injected_runner(monkeypatch):
    monkeypatch.setattr(devices.shutil, "which", lambda name: f"/usr/bin/{name}")
    calls = []

    def runner(argv, **kwargs):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0, stdout=A100_MIG_LISTING, stderr="")

    assert nvidia_smi_ids(runner)[2] == "1"
    assert calls == [["nvidia-smi", "-L"]]

    def hangs(argv, **kwargs):
        raise subprocess.TimeoutExpired(argv, kwargs.get("timeout", 0))

    assert nvidia_smi_ids(hangs) == ()


def test_skip_reason_gpu_spec_on_fake_devices():
    fake = discover(fake_gpus=2, environ={})
    assert skip_reason(spec(1), fake) == "needs 1 GPU and is not cpu_ok (fake devices)"
    assert skip_reason(spec(2), fake) == "needs 2 GPUs and is not cpu_ok (fake devices)"
    assert skip_reason(spec(1, cpu_ok=True), fake) is None
    assert skip_reason(spec(2, cpu_ok=True), fake) is None


def test_skip_reason_gpu_spec_without_a_gpu():
    cpu = discover(environ={"CUDA_VISIBLE_DEVICES": ""})
    assert skip_reason(spec(1), cpu) == "needs 1 GPU and is not cpu_ok (no GPU here)"
    assert skip_reason(spec(0), cpu) is None
    assert skip_reason(spec(1, cpu_ok=True), cpu) is None


def test_a_spec_across_nodes_runs_only_on_slurm():
    across = spec(2, cpu_ok=True, nodes=2, launcher="torchrun")
    for inventory in (discover(fake_gpus=8, environ={}), discover(environ={"CUDA_VISIBLE_DEVICES": "0,1,2,3"})):
        assert backend_skip_reason(across, inventory) == "spans 2 nodes; only --backend slurm runs it"
    assert backend_skip_reason(across, SlurmBackend.from_options({}, "").inventory(None, None)) is None


def test_skip_reason_too_many_devices():
    two = discover(environ={"CUDA_VISIBLE_DEVICES": "0,1"})
    reason = skip_reason(spec(4), two)
    assert reason is not None and reason.startswith("needs 4 devices, this run has 2 (2 GPUs [0, 1] from CUDA_VISIBLE_DEVICES)")
    assert "--fake-gpus" not in reason
    assert skip_reason(spec(2), two) is None
    assert skip_reason(spec(3, cpu_ok=True), discover(fake_gpus=2, environ={})).startswith("needs 3 devices, this run has 2")


def test_skip_reason_hints_fake_gpus_for_a_multi_device_cpu_ok_spec():
    cpu = discover(gpus=0, environ={})
    assert skip_reason(spec(2, cpu_ok=True), cpu).endswith("; try --fake-gpus 2")


def test_child_environment():
    fake = discover(fake_gpus=4, environ={})
    assert child_environment(("1", "3"), fake) == {"CUDA_VISIBLE_DEVICES": "1,3", "TRAINSPEC_DEVICE_KIND": "fake"}
    cuda = discover(environ={"CUDA_VISIBLE_DEVICES": "GPU-a,GPU-b"})
    assert child_environment(("GPU-b",), cuda)["CUDA_VISIBLE_DEVICES"] == "GPU-b"
    cpu = discover(gpus=0, environ={})
    assert child_environment(("cpu",), cpu) == {"CUDA_VISIBLE_DEVICES": "", "TRAINSPEC_DEVICE_KIND": "cpu"}


def test_discover_reads_the_real_environment_by_default(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "6")
    assert discover(smi=no_smi).ids == ("6",)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "6"  # read, never rewritten
