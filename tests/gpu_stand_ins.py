"""Stand-in `nvidia-smi`, `rocm-smi` and `amd-smi` executables, for the machines the tests do not run on.

Each is a real shell script put in a bin folder that the test puts first on PATH: it prints
what a real tool prints for the arguments the harness passes, and exits with the code given
(9 and the driver message for a broken NVIDIA driver). Any other arguments exit 64, so a
change in how the harness asks shows up as a failure, not as a silent fallback.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

BROKEN_DRIVER = (
    "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest "
    "NVIDIA driver is installed and running."
)

# Two H100s, the second with 30 GiB held by another user's job.
H100_QUERY = (
    "0, GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77, NVIDIA H100 80GB HBM3, 81559, 0\n1, "
    "GPU-0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0, NVIDIA H100 80GB HBM3, 81559, 30720\n"
)
H100_LIST = (
    "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77)\nGPU 1: NVIDIA H100 80GB HBM3 "
    "(UUID: GPU-0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0)\n"
)

A100_MIG_QUERY = (
    "0, GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77, NVIDIA A100-SXM4-40GB, 40960, 0\n"
    "1, GPU-0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0, NVIDIA A100-SXM4-40GB, 40960, 0\n"
    "2, GPU-11111111-2222-3333-4444-555555555555, NVIDIA A100-SXM4-40GB, [N/A], [N/A]\n"
)
A100_MIG_LIST = """\
GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-5d5ba0d6-d33d-2b2c-524d-9e3d8d2b8a77)
  MIG 3g.20gb     Device  0: (UUID: MIG-c6d4f1ef-42e4-5de3-91c7-45d71c87eb3f)
  MIG 3g.20gb     Device  1: (UUID: MIG-cd46a3ab-9c1a-5c4a-a7a4-8e4b9e64c6c5)
GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0)
GPU 2: NVIDIA A100-SXM4-40GB (UUID: GPU-11111111-2222-3333-4444-555555555555)
  MIG 7g.40gb     Device  0: (UUID: MIG-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee)
"""

# Two MI300X as `rocm-smi --showuniqueid --showproductname --showmeminfo vram --json` prints them.
MI300_JSON = json.dumps(
    {
        "card0": {
            "Unique ID": "0x18f68e602b8a790f",
            "Card series": "AMD Instinct MI300X",
            "VRAM Total Memory (B)": "205822885888",
            "VRAM Total Used Memory (B)": "296243200",
        },
        "card1": {
            "Unique ID": "0x2cb7b3e2c1a0f5d1",
            "Card series": "AMD Instinct MI300X",
            "VRAM Total Memory (B)": "205822885888",
            "VRAM Total Used Memory (B)": "10737418240",
        },
    }
)


def _script(path: Path, cases: dict[str, tuple[str, int] | str]) -> None:
    """A shell script answering each exact argument string with (stdout, exit code), or running the shell commands
    given."""
    lines = ["#!/bin/sh", 'case "$*" in']
    for arguments, answer in cases.items():
        body = answer if isinstance(answer, str) else f"printf '%s' {shlex.quote(answer[0])}; exit {answer[1]}"
        lines += [f"  {shlex.quote(arguments)}) {body} ;;"]
    lines += ["esac", 'echo "unexpected arguments: $*" >&2', "exit 64", ""]
    path.write_text("\n".join(lines))
    path.chmod(0o755)


def install_nvidia_smi(
    bin_dir: Path,
    query: str = H100_QUERY,
    listing: str = H100_LIST,
    code: int = 0,
    apps: Path | None = None,
    apps_fail_every: int = 0,
) -> Path:
    """An `nvidia-smi` answering the harness's query and `-L`; with `code` != 0 it fails both, as a broken driver does.

    With `apps`, it also answers `--query-compute-apps` with the lines of every `*.csv` in
    that folder (`gpu_uuid, pid, used_memory`, written by the processes that pretend to use
    a GPU), and with `apps_fail_every` N fails every Nth such query as a hiccuping driver does.
    """
    bin_dir.mkdir(parents=True, exist_ok=True)
    if code:
        query = listing = BROKEN_DRIVER + "\n"
    cases: dict[str, tuple[str, int] | str] = {
        "--query-gpu=index,uuid,name,memory.total,memory.used --format=csv,noheader,nounits": (query, code),
        "-L": (listing, code),
    }
    if apps is not None:
        folder = shlex.quote(str(apps))
        hiccup = ""
        if apps_fail_every:
            count = shlex.quote(str(apps / "queries"))
            hiccup = (
                f"n=$(( $(cat {count} 2>/dev/null || echo 0) + 1 )); echo $n > {count}; if [ $(( n % "
                f"{apps_fail_every} )) -eq 0 ]; then echo {shlex.quote(BROKEN_DRIVER)} >&2; exit 9; fi; "
            )
        cases["--query-compute-apps=gpu_uuid,pid,used_memory --format=csv,noheader,nounits"] = (
            f"{hiccup}cat {folder}/*.csv 2>/dev/null; exit 0"
        )
    _script(bin_dir / "nvidia-smi", cases)
    return bin_dir


def install_rocm_smi(bin_dir: Path, report: str = MI300_JSON, code: int = 0) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    _script(bin_dir / "rocm-smi", {"--showuniqueid --showproductname --showmeminfo vram --json": (report, code)})
    return bin_dir


def install_amd_smi(bin_dir: Path, listing: list[dict], code: int = 0) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    _script(bin_dir / "amd-smi", {"list --json": (json.dumps(listing), code)})
    return bin_dir
