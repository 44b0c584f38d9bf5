"""What the vendor tools (`nvidia-smi`, `rocm-smi`, `amd-smi`) say about this machine's GPUs.

Asked as subprocesses, so the controller never loads a driver library. A tool that is not
installed means "no GPU of that vendor"; a tool that is installed but fails (a driver
mismatch, "couldn't communicate with the NVIDIA driver", a hang) is a broken machine and
raises DeviceError quoting the tool, so a GPU run never passes by skipping every GPU spec.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

TIMEOUT_SECONDS = 20
QUERY = ["nvidia-smi", "--query-gpu=index,uuid,name,memory.total,memory.used", "--format=csv,noheader,nounits"]
ROCM_QUERY = ["rocm-smi", "--showuniqueid", "--showproductname", "--showmeminfo", "vram", "--json"]
AMD_LIST = ["amd-smi", "list", "--json"]
MIB = 1 << 20

Runner = Callable[..., subprocess.CompletedProcess]


class DeviceError(Exception):
    """A device request that cannot be honoured, or a GPU machine that cannot be used (exit 2)."""


@dataclass(frozen=True)
class DeviceFacts:
    """One device as its tool reports it; memory in MiB. `index` is the physical GPU's (a MIG
    instance's parent), for matching the caller's index entries."""

    id: str
    uuid: str | None = None
    name: str | None = None
    memory_total: int | None = None
    memory_used: int | None = None
    index: int | None = None


def run_tool(argv: list[str], *, timeout: float, **_: object) -> subprocess.CompletedProcess:
    """`subprocess.run` in a process group of its own, its stdout and stderr as bytes: a tool that is a
    wrapper script leaves no hung child behind when it is cut off, because the whole group is killed."""
    with subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    ) as proc:
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc.pid)
            proc.communicate()
            raise
        # The tool has answered; a child it left behind in its group is of no use to anyone.
        _kill_group(proc.pid)
        return subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _text(tool: str, data: bytes | str) -> str:
    """The tool's output as text; DeviceError quoting it when it is not text (a tool that prints garbage)."""
    if isinstance(data, str):
        return data
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise DeviceError(
            f"{tool} printed something that is not text: {data[:40]!r}; "
            "fix the driver, or run without GPUs (CUDA_VISIBLE_DEVICES= or --fake-gpus N)"
        ) from None


def _ask(argv: list[str], runner: Runner) -> str | None:
    """The tool's stdout; None when the tool is not installed; DeviceError when it fails."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = runner(argv, capture_output=True, timeout=TIMEOUT_SECONDS, check=False)
    except subprocess.TimeoutExpired:
        raise DeviceError(
            f"{argv[0]} did not answer within {TIMEOUT_SECONDS} s (a hung GPU driver?); `{' '.join(argv)}` "
            "must work for the harness to use this machine's GPUs"
        ) from None
    except OSError as error:
        raise DeviceError(f"{argv[0]} could not be run: {error}") from None
    stdout = _text(argv[0], done.stdout)
    if done.returncode != 0:
        said = " ".join(f"{stdout}\n{_text(argv[0], done.stderr)}".split()) or "no message"
        if "no devices were found" in said.lower():
            return ""
        raise DeviceError(
            f"{argv[0]} failed (exit {done.returncode}): {said[:400]}; fix the driver, or run without GPUs "
            "(CUDA_VISIBLE_DEVICES= or --fake-gpus N)"
        )
    return stdout


def _mib(text: str) -> int | None:
    """A number of MiB, or None for nvidia-smi's `[N/A]` and `[Not Supported]`."""
    try:
        return int(float(text))
    except ValueError:
        return None


def nvidia_devices(runner: Runner = run_tool) -> tuple[DeviceFacts, ...] | None:
    """Every GPU nvidia-smi lists, with its UUID and memory; a GPU split into MIG instances is
    listed as its instances (by MIG UUID, memory unknown). None when nvidia-smi is not installed."""
    table = _ask(QUERY, runner)
    if table is None:
        return None
    gpus = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.split(",")]
        if len(cells) == 5 and cells[0].isdigit():
            index, uuid, name, total, used = cells
            gpus[index] = DeviceFacts(index, uuid or None, name or None, _mib(total), _mib(used), int(index))
    listing = _ask(["nvidia-smi", "-L"], runner) or ""
    found: list[DeviceFacts] = []
    parent: str | None = None
    for line in listing.splitlines():
        gpu = re.match(r"^GPU (\d+):", line)
        mig = re.search(r"\(UUID: (MIG-[^)]+)\)", line)
        if gpu:
            parent = gpu.group(1)
            found.append(gpus.get(parent) or DeviceFacts(parent, index=int(parent)))
        elif mig and parent is not None:
            if found and found[-1].id == parent:
                found.pop()  # the parent GPU is not usable as a whole once it is split
            profile = re.search(r"MIG (\S+)", line)
            found.append(
                DeviceFacts(mig.group(1), mig.group(1), profile.group(1) if profile else None, index=int(parent))
            )
    return tuple(found) if found or not gpus else tuple(gpus.values())


def _bytes_to_mib(value: object) -> int | None:
    try:
        return int(str(value)) // MIB
    except ValueError:
        return None


def amd_devices(runner: Runner = run_tool) -> tuple[DeviceFacts, ...] | None:
    """Every GPU rocm-smi lists (UUID, name, VRAM), else amd-smi's list (UUIDs only); None when neither is installed."""
    report = _ask(ROCM_QUERY, runner)
    if report is not None:
        try:
            cards = json.loads(report or "{}")
        except json.JSONDecodeError:
            raise DeviceError(f"rocm-smi printed something that is not JSON: {report.strip()[:200]!r}") from None
        found = []
        for card, facts in cards.items():
            number = re.fullmatch(r"card(\d+)", card)
            if number and isinstance(facts, dict):
                unique = str(facts.get("Unique ID", "")).removeprefix("0x")
                found.append(
                    DeviceFacts(
                        number.group(1),
                        f"GPU-{unique}" if unique else None,
                        facts.get("Card series") or facts.get("Card model"),
                        _bytes_to_mib(facts.get("VRAM Total Memory (B)")),
                        _bytes_to_mib(facts.get("VRAM Total Used Memory (B)")),
                        int(number.group(1)),
                    )
                )
        return tuple(found)
    listing = _ask(AMD_LIST, runner)
    if listing is None:
        return None
    try:
        entries = json.loads(listing or "[]")
    except json.JSONDecodeError:
        raise DeviceError(f"amd-smi printed something that is not JSON: {listing.strip()[:200]!r}") from None
    return tuple(
        DeviceFacts(str(e["gpu"]), e.get("uuid"), index=int(e["gpu"]))
        for e in entries
        if isinstance(e, dict) and str(e.get("gpu", "")).isdigit()
    )


def probe_devices(kind: str) -> tuple[DeviceFacts, ...] | None:
    """The devices of one vendor (`cuda` or `rocm`); None when its tools are not installed."""
    return nvidia_devices() if kind == "cuda" else amd_devices()
