"""Peak GPU memory: the sampler, the vendor queries it reads, the warning, what the cache keeps, the summary column."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from harness.devices.visible import DeviceFacts, Inventory, discover
from harness.records import SpecResult
from harness.report.summary import summary_lines
from harness.runner import peaks
from harness.runner.peaks import (
    NvmlUsage,
    PeakSampler,
    memory_check,
    peaks_to_keep,
    run_devices,
    sampling,
    smi_usage,
    usage_query,
)

from ..gpu_stand_ins import install_nvidia_smi

GPU0 = "GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77"
GPU1 = "GPU-0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"
CUDA = Inventory(
    ("0", "1"),
    "cuda",
    "nvidia-smi",
    (DeviceFacts("0", GPU0, memory_total=81559), DeviceFacts("1", GPU1, memory_total=81559)),
)


def test_nothing_is_sampled_on_fake_devices_the_cpu_or_devices_without_a_uuid() -> None:
    started: list[int] = []
    no_uuid = Inventory(("3",), "cuda", "CUDA_VISIBLE_DEVICES")
    for inventory, devices in ((discover(fake_gpus=2), ("0",)), (discover(gpus=0), ()), (no_uuid, ("3",)), (CUDA, ())):
        with sampling(inventory, devices, started.append) as sampler:
            sampler.on_start(4242)
            assert sampler._thread is None
        assert sampler.peaks == {}
    # The lease's own on_start is still called.
    assert started == [4242] * 4
    assert run_devices(CUDA, ("1",)) == {GPU1: "1"}


def test_the_sampler_keeps_the_largest_sum_of_the_run_tree_on_each_of_its_devices() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        answers = iter(
            [
                [(GPU0, child.pid, 100), (GPU0, os.getpid(), 50)],
                None,  # a failed sample is skipped
                [(GPU0.upper(), child.pid, 300), (GPU0, 1, 30000), (GPU1, child.pid, 999), ("GPU-other", child.pid, 5)],
                [(GPU0, child.pid, 200)],
            ]
        )
        done = threading.Event()
        closed: list[bool] = []

        def query() -> list[tuple[str, int, int]] | None:
            answer = next(answers, [])
            if answer == []:
                done.set()
            return answer

        class Query:
            def __call__(self) -> list[tuple[str, int, int]] | None:
                return query()

            def close(self) -> None:
                closed.append(True)

        def make(uuids: list[str]) -> Query:
            assert uuids == [GPU0.lower()]
            return Query()

        sampler = PeakSampler({GPU0: "0"}, query=make, interval=0.01)
        sampler.on_start(os.getpid())  # this test's process leads the tree; its child is a descendant
        assert done.wait(10)
        found = sampler.stop()
    finally:
        child.kill()
        child.wait()
    # 150 at first, then 300 (the foreign pid 1, GPU 1 and an unknown GPU not counted), then 200.
    assert found == {"0": 300}
    assert closed == [True]


def test_smi_usage_reads_the_compute_apps_table_and_a_failure_is_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    apps = tmp_path / "apps"
    apps.mkdir()
    (apps / "a.csv").write_text(f"{GPU0}, 4242, 1536\n{GPU1}, 17, [N/A]\ngarbage line\n{GPU1}, x, 12\n")
    bin_dir = install_nvidia_smi(tmp_path / "bin", apps=apps, apps_fail_every=2)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    assert smi_usage() == [(GPU0, 4242, 1536)]
    assert smi_usage() is None  # the second query fails (exit 9)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert smi_usage() is None  # no nvidia-smi at all


class FakeNvml:
    """NVML as nvidia-ml-py exposes it, for the calls the harness makes."""

    class NVMLError(Exception):
        pass

    def __init__(self, processes: dict[str, list[SimpleNamespace]], fail: bool = False):
        self.processes, self.fail, self.calls = processes, fail, []

    def nvmlInit(self) -> None:
        self.calls.append("init")

    def nvmlShutdown(self) -> None:
        self.calls.append("shutdown")

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> str:
        if uuid not in self.processes:
            raise self.NVMLError("Not Found")
        return uuid

    def nvmlDeviceGetComputeRunningProcesses(self, handle: str) -> list[SimpleNamespace]:
        if self.fail:
            raise self.NVMLError("GPU is lost")
        return self.processes[handle]


def test_nvml_usage_reports_mib_per_process_and_a_failed_call_is_none() -> None:
    nvml = FakeNvml({GPU0: [SimpleNamespace(pid=7, usedGpuMemory=3 << 30), SimpleNamespace(pid=8, usedGpuMemory=None)]})
    usage = NvmlUsage(nvml, [GPU0])
    assert usage() == [(GPU0, 7, 3072)]
    nvml.fail = True
    assert usage() is None
    usage.close()
    assert nvml.calls == ["init", "shutdown"]
    with pytest.raises(FakeNvml.NVMLError):
        NvmlUsage(FakeNvml({}), [GPU0])


def test_without_nvidia_ml_py_the_query_is_nvidia_smi(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    assert usage_query([GPU0]) is smi_usage


def test_a_peak_over_the_declared_memory_warns_naming_both_numbers() -> None:
    assert memory_check({"0": 6000}, None, None) == []
    assert memory_check({}, 5120, "5GiB") == []
    (fine,) = memory_check({"0": 4000, "1": 4500}, 5120, "5GiB")
    assert (fine.passed, fine.severity, fine.found) == (True, "warn", "peak 4500 MiB on device 1")
    (over,) = memory_check({"0": 6000, "1": 4000}, 5120, "5GiB")
    assert (over.passed, over.severity) == (False, "warn")
    assert over.line().startswith(
        "[WARN] gpu_memory: expected at most 5120 MiB per device (gpu_memory: 5GiB); found peak 6000 MiB on device 0"
    )


def test_the_cache_keeps_a_passed_peak_and_a_failed_run_only_raises_it() -> None:
    records = [
        SpecResult("passed_lower", "passed", peak_gpu_memory={"0": 1000, "1": 3000}),
        SpecResult("failed_lower", "failed", peak_gpu_memory={"0": 500}),
        SpecResult("failed_higher", "failed", peak_gpu_memory={"0": 9000}),
        SpecResult("skipped", "skipped"),
        SpecResult("unmeasured", "passed"),
    ]
    kept = {"passed_lower": 5000.0, "failed_lower": 2000.0, "failed_higher": 2000.0}
    assert peaks_to_keep(records, kept) == {"passed_lower": 3000.0, "failed_lower": 2000.0, "failed_higher": 9000.0}


def test_the_summary_shows_peak_memory_only_where_it_was_measured(tmp_path: Path) -> None:
    plain = summary_lines([SpecResult("a", "passed", duration=1.0, devices=["0"])], tmp_path)
    assert "peak MiB" not in plain[0]
    lines = summary_lines(
        [
            SpecResult("a", "passed", duration=1.0, devices=["0", "1"], peak_gpu_memory={"0": 6000, "1": 5800}),
            SpecResult("b", "passed", duration=1.0, devices=["0"]),
        ],
        tmp_path,
    )
    assert lines[0].split() == ["spec", "time", "devices", "peak", "MiB", "steps", "final", "loss", "reason"]
    assert lines[1].split()[:5] == ["PASS", "a", "1.0s", "0,1", "6000,5800"]
    assert lines[2].split()[:5] == ["PASS", "b", "1.0s", "0", "-"]


def test_stop_does_not_wait_for_a_hung_sample_whose_late_answer_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(peaks, "JOIN_SECONDS", 0.1)
    asked, release = threading.Event(), threading.Event()

    def hung() -> list[tuple[str, int, int]]:
        asked.set()
        release.wait(30)
        return [(GPU0, os.getpid(), 5000)]

    sampler = PeakSampler({GPU0: "0"}, query=lambda uuids: hung, interval=0.01)
    sampler.on_start(os.getpid())
    assert asked.wait(10)
    assert sampler.stop() == {}
    assert sampler._thread is not None and sampler._thread.is_alive()  # stop returned while the sample hangs
    release.set()
    sampler._thread.join(10)
    assert sampler.peaks == {}
