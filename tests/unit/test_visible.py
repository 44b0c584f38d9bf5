"""harness.devices.visible: which devices a run may use, from flags, the caller's environment or the vendor tools."""

from __future__ import annotations

import os
import subprocess
from dataclasses import asdict
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harness.backends import skip_reason as backend_skip_reason
from harness.backends.slurm import SlurmBackend
from harness.devices import vendor_tools
from harness.devices.vendor_tools import amd_devices, nvidia_devices
from harness.devices.visible import (
    DEFAULT_FAKE_MEMORY,
    DeviceError,
    DeviceFacts,
    Inventory,
    child_environment,
    discover,
    parse_visible,
    skip_reason,
)
from harness.spec.files import spec_from_mapping
from harness.spec.rules import parse_memory

from ..gpu_stand_ins import (
    A100_MIG_LIST,
    A100_MIG_QUERY,
    BROKEN_DRIVER,
    install_amd_smi,
    install_nvidia_smi,
    install_rocm_smi,
)

UUID0 = "GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77"
UUID1 = "GPU-0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"


def no_probe(kind: str):
    raise AssertionError("the vendor tools must not be consulted here")


def no_tools(kind: str) -> None:
    return None


def tools(cuda=None, rocm=None):
    """A probe answering as a machine whose tools list these devices (None: that tool is not installed)."""
    return lambda kind: {"cuda": cuda, "rocm": rocm}[kind]


def device_facts(*ids: str, memory: int = 81559) -> tuple[DeviceFacts, ...]:
    return tuple(DeviceFacts(i, f"GPU-{i}{i}{i}", "NVIDIA H100", memory, 0, int(i)) for i in ids)


def spec(gpus: int = 1, cpu_ok: bool = False, **fields):
    return spec_from_mapping({"id": "s", "command": ["x"], "gpus": gpus, "cpu_ok": cpu_ok, **fields}, Path("s.yaml"))


@pytest.fixture
def on_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A bin folder first on PATH, with nothing else of the vendor tools reachable."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


# fake devices and flags ----------------------------------------------------------------------


def test_fake_gpus():
    inv = discover(fake_gpus=3, environ={"CUDA_VISIBLE_DEVICES": "7"}, probe=no_probe)
    assert (inv.ids, inv.kind, inv.source) == (("0", "1", "2"), "fake", "--fake-gpus 3")
    assert inv.count == 3
    assert "3 fake devices [0, 1, 2]" in inv.describe()
    assert [(f.memory_total, f.memory_used) for f in inv.facts] == [(DEFAULT_FAKE_MEMORY, 0)] * 3 == [(81920, 0)] * 3


def test_fake_gpu_memory_sizes_the_fake_devices():
    inv = discover(fake_gpus=2, fake_gpu_memory=parse_memory("24GiB"), environ={}, probe=no_probe)
    assert inv.fact("1").memory_total == 24576
    assert inv.source == "--fake-gpus 2 --fake-gpu-memory 24576MiB"
    with pytest.raises(DeviceError, match="--fake-gpu-memory sizes fake devices: give --fake-gpus N with it"):
        discover(fake_gpu_memory=1024, environ={}, probe=no_probe)


@pytest.mark.parametrize("bad", [0, -2])
def test_fake_gpus_must_be_positive(bad):
    with pytest.raises(DeviceError, match="--fake-gpus must be at least 1"):
        discover(fake_gpus=bad, environ={}, probe=no_probe)


def test_gpus_and_fake_gpus_together_are_refused():
    with pytest.raises(DeviceError, match="not both"):
        discover(gpus=1, fake_gpus=1, environ={}, probe=no_probe)


def test_gpus_zero_means_cpu():
    assert discover(gpus=0, environ={"CUDA_VISIBLE_DEVICES": "0"}, probe=no_probe).kind == "cpu"
    with pytest.raises(DeviceError, match="--gpus must be 0 or more"):
        discover(gpus=-1, environ={}, probe=no_probe)


# --gpus N needs N visible devices --------------------------------------------------------------


def test_gpus_takes_the_first_n_devices_nvidia_smi_lists_with_their_facts():
    inv = discover(gpus=2, environ={}, probe=tools(cuda=device_facts("0", "1", "2")))
    assert (inv.ids, inv.kind, inv.source) == (("0", "1"), "cuda", "--gpus 2 of nvidia-smi")
    assert inv.fact("1") == device_facts("1")[0]


@pytest.mark.parametrize(
    ("probe", "found"),
    [
        (no_tools, "found 0 (no GPU found: no nvidia-smi, rocm-smi or amd-smi on PATH)"),
        (tools(cuda=()), "found 0 (no GPU found: nvidia-smi lists none)"),
        (tools(cuda=device_facts("0", "1")), "found 2: 2 GPUs [0, 1] from nvidia-smi"),
    ],
)
def test_gpus_beyond_what_is_visible_is_an_error_naming_the_count_and_fake_gpus(probe, found):
    with pytest.raises(DeviceError) as error:
        discover(gpus=12, environ={}, probe=probe)
    assert str(error.value).startswith(f"--gpus 12 needs 12 visible devices, {found}")
    assert str(error.value).endswith("; --fake-gpus 12 simulates devices without a GPU")


def test_gpus_index_into_the_callers_list_never_around_it():
    inv = discover(gpus=2, environ={"CUDA_VISIBLE_DEVICES": "3,5,7"}, probe=no_tools)
    assert (inv.ids, inv.kind, inv.source) == (("3", "5"), "cuda", "--gpus 2 of CUDA_VISIBLE_DEVICES")


def test_gpus_larger_than_the_callers_list_is_an_error():
    with pytest.raises(
        DeviceError,
        match=r"--gpus 3 needs 3 visible devices, found 2: 2 GPUs \[4, 5\] from CUDA_VISIBLE_DEVICES; --fake-gpus 3",
    ):
        discover(gpus=3, environ={"CUDA_VISIBLE_DEVICES": "4,5"}, probe=no_tools)


def test_gpus_with_an_empty_caller_list_is_an_error():
    with pytest.raises(DeviceError, match=r"found 0 \(CUDA_VISIBLE_DEVICES='' names no device\)"):
        discover(gpus=1, environ={"CUDA_VISIBLE_DEVICES": ""}, probe=no_probe)


# CUDA_VISIBLE_DEVICES read as CUDA reads it ------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ids", "dropped"),
    [
        ("", (), ()),
        ("1", ("1",), ()),
        ("0,1", ("0", "1"), ()),
        (" 2, 3 ,", ("2", "3"), ()),
        ("-1", (), ("-1",)),
        ("0,-1,1", ("0",), ("-1", "1")),
        ("abc", (), ("abc",)),
        ("0,abc,1", ("0",), ("abc", "1")),
        ("0,,1", ("0",), ("1",)),
        ("1.5", (), ("1.5",)),
        ("GPU", (), ("GPU",)),
        (f"{UUID0},{UUID1}", (UUID0, UUID1), ()),
        ("GPU-5d5ba0d6", ("GPU-5d5ba0d6",), ()),
        ("MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f", ("MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f",), ()),
        (f"MIG-{UUID0}/7/0", (f"MIG-{UUID0}/7/0",), ()),
    ],
)
def test_parse_visible(value, ids, dropped):
    assert parse_visible(value) == (ids, dropped)


@pytest.mark.parametrize("value", ["0,0", "1,2,01", f"{UUID0},GPU-{UUID0[4:].upper()}"])
def test_a_device_named_twice_is_refused_as_cuda_refuses_it(value):
    with pytest.raises(DeviceError, match=r"CUDA_VISIBLE_DEVICES=.* names device .* twice .*name each device once"):
        parse_visible(value)
    with pytest.raises(DeviceError):
        discover(environ={"CUDA_VISIBLE_DEVICES": value}, probe=no_tools)


def test_a_duplicate_after_the_end_of_the_list_is_not_read():
    assert parse_visible("0,abc,0") == (("0",), ("abc", "0"))


ENTRIES = st.one_of(
    st.integers(0, 20).map(str),
    st.from_regex(r"GPU-[0-9a-f]{4,8}", fullmatch=True),
    st.from_regex(r"MIG-[0-9a-f]{4,8}", fullmatch=True),
    st.sampled_from(["-1", "abc", "", "1.5", "GPU", "0x1", "gpu-1"]),
    st.text(alphabet="0123456789abcdefGPUMI-/ x", max_size=8),
)


def key(entry: str) -> str:
    """Two entries name the same device when their keys are equal (an index with leading zeros is the same index)."""
    return str(int(entry)) if entry.isdigit() else entry.lower()


@settings(max_examples=300, deadline=None)
@given(st.lists(ENTRIES, max_size=8))
def test_parse_visible_keeps_the_leading_valid_entries_and_names_the_rest(entries):
    """Any value: the leading entries that are valid on their own are kept (or refused when one repeats);
    the first other entry and every entry after it are dropped, empty ones left unnamed."""
    value = ",".join(entries)
    stripped = [e.strip() for e in value.split(",")]
    valid = [e for e in stripped if parse_visible(e).ids == (e,)]
    assert all(e.isdigit() or e.startswith(("GPU-", "MIG-")) for e in valid)
    prefix = next((stripped[:i] for i, e in enumerate(stripped) if e not in valid), stripped)
    keys = [key(e) for e in prefix]
    if len(set(keys)) < len(keys):
        with pytest.raises(DeviceError, match="twice"):
            parse_visible(value)
        return
    assert parse_visible(value) == (tuple(prefix), tuple(e for e in stripped[len(prefix) :] if e))


@given(
    st.one_of(
        st.integers(0, 10**6).map(str), st.from_regex(r"(GPU|MIG)-[0-9a-f]{1,8}(-[0-9a-f]{1,8}){0,4}", fullmatch=True)
    )
)
def test_every_index_and_identifier_is_a_valid_entry(entry):
    assert parse_visible(entry) == ((entry,), ())


@pytest.mark.parametrize(
    ("value", "source"),
    [
        ("0,1", "CUDA_VISIBLE_DEVICES"),
        (f"{UUID0},{UUID1}", "CUDA_VISIBLE_DEVICES"),
        ("0,abc,1", "CUDA_VISIBLE_DEVICES (dropped 'abc', '1': the runtime stops at the first invalid entry)"),
    ],
)
def test_callers_visible_devices_are_handed_on_as_they_are_and_what_was_dropped_is_said(value, source):
    inv = discover(environ={"CUDA_VISIBLE_DEVICES": value}, probe=no_tools)
    assert (inv.ids, inv.kind, inv.source) == (parse_visible(value).ids, "cuda", source)
    assert source in inv.describe()


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("", "CUDA_VISIBLE_DEVICES='' names no device"),
        (" ,", "CUDA_VISIBLE_DEVICES=' ,' names no device"),
        (
            "-1",
            "CUDA_VISIBLE_DEVICES='-1' names no device (dropped '-1': the runtime stops at the first invalid entry)",
        ),
        (
            "abc",
            "CUDA_VISIBLE_DEVICES='abc' names no device (dropped 'abc': the runtime stops at the first invalid entry)",
        ),
    ],
)
def test_a_visible_list_with_no_device_means_cpu_and_says_why(value, said):
    inv = discover(environ={"CUDA_VISIBLE_DEVICES": value}, probe=no_probe)
    assert (inv.ids, inv.kind, inv.source) == (("cpu",), "cpu", said)
    assert inv.describe() == f"no GPU ({said}; CPU only, one run at a time, cpu_ok specs only)"


def test_callers_entries_get_nvidia_smis_facts_and_one_it_does_not_list_ends_the_list():
    listed = device_facts("0", "1")
    inv = discover(environ={"CUDA_VISIBLE_DEVICES": "1,GPU-000,7,0"}, probe=tools(cuda=listed))
    assert inv.ids == ("1", "GPU-000")
    assert [(f.id, f.uuid, f.memory_total) for f in inv.facts] == [
        ("1", "GPU-111", 81559),
        ("GPU-000", "GPU-000", 81559),
    ]
    assert (
        inv.source
        == "CUDA_VISIBLE_DEVICES (dropped '7', '0': nvidia-smi lists no such device, and the runtime stops at "
        "the first invalid entry)"
    )


def test_an_index_and_a_uuid_of_one_device_are_a_duplicate():
    with pytest.raises(DeviceError, match=r"names one device twice \('0' and 'GPU-000' are both GPU-000\)"):
        discover(environ={"CUDA_VISIBLE_DEVICES": "0,GPU-000"}, probe=tools(cuda=device_facts("0", "1")))


def test_the_harness_never_rewrites_the_callers_variable(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "6")
    assert discover(probe=no_tools).ids == ("6",)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "6"


# AMD ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "ids", "source"),
    [
        ({"ROCR_VISIBLE_DEVICES": "2,3"}, ("2", "3"), "ROCR_VISIBLE_DEVICES"),
        (
            {"HIP_VISIBLE_DEVICES": "1,x,0"},
            ("1",),
            "HIP_VISIBLE_DEVICES (dropped 'x', '0': the runtime stops at the first invalid entry)",
        ),
        (
            {"ROCR_VISIBLE_DEVICES": "4,5,GPU-ab", "HIP_VISIBLE_DEVICES": "2,0,3"},
            ("GPU-ab", "4"),
            "HIP_VISIBLE_DEVICES within ROCR_VISIBLE_DEVICES (dropped '3': HIP_VISIBLE_DEVICES indexes into "
            "ROCR_VISIBLE_DEVICES, which has no such entry)",
        ),
        ({"ROCR_VISIBLE_DEVICES": "4,5", "CUDA_VISIBLE_DEVICES": "0,0"}, ("4", "5"), "ROCR_VISIBLE_DEVICES"),
    ],
)
def test_amd_variables_are_read_as_the_rocm_runtime_reads_them(environ, ids, source):
    inv = discover(environ=environ, probe=no_tools)
    assert (inv.ids, inv.kind, inv.source) == (ids, "rocm", source)
    assert inv.describe().startswith(f"{len(ids)} AMD GPU")


def test_amd_duplicates_are_refused_and_gpus_counts_them():
    with pytest.raises(DeviceError, match="HIP_VISIBLE_DEVICES='1,1' names device 1 twice"):
        discover(environ={"HIP_VISIBLE_DEVICES": "1,1"}, probe=no_tools)
    with pytest.raises(DeviceError, match="--gpus 3 needs 3 visible devices, found 2"):
        discover(gpus=3, environ={"ROCR_VISIBLE_DEVICES": "0,1"}, probe=no_tools)


def test_amd_children_get_their_devices_in_every_variable_hip_reads():
    inv = discover(environ={"ROCR_VISIBLE_DEVICES": "GPU-aa,GPU-bb,GPU-cc"}, probe=no_tools)
    assert child_environment(("GPU-bb", "GPU-cc"), inv) == {
        "ROCR_VISIBLE_DEVICES": "GPU-bb,GPU-cc",
        "HIP_VISIBLE_DEVICES": "0,1",
        "CUDA_VISIBLE_DEVICES": "0,1",
        "TRAINSPEC_DEVICE_KIND": "rocm",
    }
    assert skip_reason(spec(1), inv) is None


def test_without_nvidia_smi_rocm_smi_decides():
    inv = discover(environ={}, probe=tools(cuda=None, rocm=device_facts("0", "1")))
    assert (inv.ids, inv.kind, inv.source) == (("0", "1"), "rocm", "rocm-smi or amd-smi")


# the vendor tools, as real executables -----------------------------------------------------------


def test_nvidia_devices_reads_uuids_and_memory_from_a_real_executable(on_path):
    install_nvidia_smi(on_path)
    assert nvidia_devices() == (
        DeviceFacts("0", "GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77", "NVIDIA H100 80GB HBM3", 81559, 0, 0),
        DeviceFacts("1", "GPU-0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0", "NVIDIA H100 80GB HBM3", 81559, 30720, 1),
    )
    inv = discover(environ={})
    assert inv.describe() == "2 GPUs [0, 1] from nvidia-smi, 81559 MiB each (busy: 1 has 30720 MiB in use)"


def test_nvidia_devices_lists_mig_instances_instead_of_their_gpu(on_path):
    install_nvidia_smi(on_path, A100_MIG_QUERY, A100_MIG_LIST)
    found = nvidia_devices()
    assert [(f.id, f.name, f.memory_total, f.index) for f in found] == [
        ("MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f", "3g.20gb", None, 0),
        ("MIG-cd46a3ab-9c1a-5c4a-a7a4-8e4b9e64c6c5", "3g.20gb", None, 0),
        ("1", "NVIDIA A100-SXM4-40GB", 40960, 1),
        ("MIG-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "7g.40gb", None, 2),
    ]
    # An index or UUID of a split GPU is kept (without facts): the tool lists its instances.
    inv = discover(environ={"CUDA_VISIBLE_DEVICES": f"0,{UUID1},GPU-5d5ba0d6,MIG-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"})
    assert inv.ids == ("0", UUID1, "GPU-5d5ba0d6", "MIG-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee")
    assert [f.memory_total for f in inv.facts] == [None, 40960, None, None]


def test_a_failing_nvidia_smi_is_a_broken_driver_never_no_gpu(on_path):
    install_nvidia_smi(on_path, code=9)
    for call in (
        nvidia_devices,
        lambda: discover(environ={}),
        lambda: discover(gpus=1, environ={}),
        lambda: discover(environ={"CUDA_VISIBLE_DEVICES": "0"}),
    ):
        with pytest.raises(DeviceError) as error:
            call()
        assert str(error.value).startswith(
            f"nvidia-smi failed (exit 9): {BROKEN_DRIVER}; fix the driver, or run without GPUs"
        )
    # Hiding every GPU, or simulating them, needs no driver.
    assert discover(environ={"CUDA_VISIBLE_DEVICES": ""}).kind == "cpu"
    assert discover(fake_gpus=1, environ={}).kind == "fake"


def test_nvidia_smi_that_finds_no_device_means_no_gpu(on_path):
    (on_path / "nvidia-smi").write_text("#!/bin/sh\necho 'No devices were found'\nexit 6\n")
    (on_path / "nvidia-smi").chmod(0o755)
    assert nvidia_devices() == ()
    assert discover(environ={}).source == "no GPU found: nvidia-smi lists none"


def test_a_hung_or_unrunnable_tool_is_an_error(monkeypatch):
    monkeypatch.setattr(vendor_tools.shutil, "which", lambda name: f"/usr/bin/{name}")

    def hangs(argv, **kwargs):
        raise subprocess.TimeoutExpired(argv, kwargs["timeout"])

    def denied(argv, **kwargs):
        raise PermissionError(13, "Permission denied")

    with pytest.raises(DeviceError, match="nvidia-smi did not answer within 20 s"):
        nvidia_devices(hangs)
    with pytest.raises(DeviceError, match="nvidia-smi could not be run: .*Permission denied"):
        nvidia_devices(denied)


def test_rocm_smi_gives_uuids_and_memory(on_path):
    install_rocm_smi(on_path)
    assert amd_devices() == (
        DeviceFacts("0", "GPU-18f68e602b8a790f", "AMD Instinct MI300X", 196288, 282, 0),
        DeviceFacts("1", "GPU-2cb7b3e2c1a0f5d1", "AMD Instinct MI300X", 196288, 10240, 1),
    )
    inv = discover(environ={"ROCR_VISIBLE_DEVICES": "GPU-2cb7b3e2c1a0f5d1"})
    assert (inv.ids, inv.fact("GPU-2cb7b3e2c1a0f5d1").memory_used) == (("GPU-2cb7b3e2c1a0f5d1",), 10240)


def test_amd_smi_stands_in_for_rocm_smi(on_path):
    install_amd_smi(
        on_path, [{"gpu": 0, "bdf": "0000:0c:00.0", "uuid": "aaaa"}, {"gpu": 1, "bdf": "0000:22:00.0", "uuid": "bbbb"}]
    )
    assert [(f.id, f.uuid) for f in amd_devices()] == [("0", "aaaa"), ("1", "bbbb")]


@pytest.mark.parametrize("tool", ["rocm", "amd"])
def test_a_failing_or_garbled_amd_tool_is_an_error(on_path, tool):
    install = install_rocm_smi if tool == "rocm" else install_amd_smi
    install(on_path, "not json" if tool == "rocm" else [], code=1)
    with pytest.raises(DeviceError, match=f"{tool}-smi failed \\(exit 1\\)"):
        discover(environ={})
    install(on_path, "{not json" if tool == "rocm" else [], code=0)
    if tool == "rocm":
        with pytest.raises(DeviceError, match="rocm-smi printed something that is not JSON"):
            amd_devices()


# memory sizes --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "mib"),
    [
        ("6GiB", 6144),
        ("512MiB", 512),
        ("512 mib", 512),
        ("1.5GiB", 1536),
        ("24GB", 22888),
        ("80GiB", 81920),
        ("1TiB", 1048576),
        (" 100 MB ", 95),
    ],
)
def test_parse_memory(text, mib):
    assert parse_memory(text) == mib


@pytest.mark.parametrize(
    "text", ["6", "six GiB", "6 apples", "-1GiB", "0GiB", "0.1MiB", "", "GiB", "1e3MiB", "6GiB extra"]
)
def test_parse_memory_refuses_garbage_with_a_clear_message(text):
    with pytest.raises(ValueError, match=r"is not a memory size"):
        parse_memory(text)


# what the run does with them --------------------------------------------------------------------


def test_an_inventory_survives_the_trip_to_a_worker():
    inv = discover(fake_gpus=2, fake_gpu_memory=1024, environ={})
    assert Inventory.from_dict(asdict(inv)) == inv
    assert Inventory.from_dict({"ids": ["0"], "kind": "cuda", "source": "x"}) == Inventory(("0",), "cuda", "x")


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
    for inventory in (
        discover(fake_gpus=8, environ={}),
        discover(environ={"CUDA_VISIBLE_DEVICES": "0,1,2,3"}, probe=no_tools),
    ):
        assert backend_skip_reason(across, inventory) == "spans 2 nodes; only --backend slurm runs it"
    assert backend_skip_reason(across, SlurmBackend.from_options({}, "").inventory({})) is None


def test_skip_reason_too_many_devices():
    two = discover(environ={"CUDA_VISIBLE_DEVICES": "0,1"}, probe=no_tools)
    reason = skip_reason(spec(4), two)
    assert reason is not None and reason.startswith(
        "needs 4 devices, this run has 2 (2 GPUs [0, 1] from CUDA_VISIBLE_DEVICES)"
    )
    assert "--fake-gpus" not in reason
    assert skip_reason(spec(2), two) is None
    assert skip_reason(spec(3, cpu_ok=True), discover(fake_gpus=2, environ={})).startswith(
        "needs 3 devices, this run has 2"
    )


def test_skip_reason_hints_fake_gpus_for_a_multi_device_cpu_ok_spec():
    cpu = discover(gpus=0, environ={})
    assert skip_reason(spec(2, cpu_ok=True), cpu).endswith("; try --fake-gpus 2")


@pytest.mark.parametrize(
    ("inventory", "said"),
    [
        (
            lambda: discover(gpus=0, environ={}),
            "needs 2 devices, this run has no GPU (--gpus 0; CPU only, one run at a time, cpu_ok specs "
            "only); try --fake-gpus 2",
        ),
        (
            lambda: discover(environ={"CUDA_VISIBLE_DEVICES": ""}),
            "needs 2 devices, this run has no GPU (CUDA_VISIBLE_DEVICES='' names no device; CPU only",
        ),
        (
            lambda: discover(fake_gpus=1, environ={}),
            "needs 2 devices, this run has 1 (1 fake device [0] from --fake-gpus 1)",
        ),
    ],
    ids=["--gpus 0", "none visible", "one fake"],
)
def test_a_skip_names_the_real_inventory_never_a_cpu_slot_as_a_device(inventory, said):
    assert skip_reason(spec(2, cpu_ok=True), inventory()).startswith(said)


def test_child_environment():
    fake = discover(fake_gpus=4, environ={})
    assert child_environment(("1", "3"), fake) == {"CUDA_VISIBLE_DEVICES": "1,3", "TRAINSPEC_DEVICE_KIND": "fake"}
    cuda = discover(environ={"CUDA_VISIBLE_DEVICES": "GPU-a,GPU-b"}, probe=no_tools)
    assert child_environment(("GPU-b",), cuda)["CUDA_VISIBLE_DEVICES"] == "GPU-b"
    cpu = discover(gpus=0, environ={})
    assert child_environment(("cpu",), cpu) == {"CUDA_VISIBLE_DEVICES": "", "TRAINSPEC_DEVICE_KIND": "cpu"}
