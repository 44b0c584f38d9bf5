"""Inside a multi-node Slurm job: point this node's torchrun at the allocation's rendezvous, then become it.

srun starts this once per node (`--ntasks-per-node=1`) in front of the spec's torchrun
command. torchrun reads each of its options from a `PET_<OPTION>` variable when the
option is not on its command line, so the rendezvous goes into the environment and the
command runs unchanged. The first node of the allocation hosts the c10d store, on a port
derived from the job id so every node computes the same one without talking to the
others. `is_host` is set explicitly on every node: torchrun's own guess (does the
endpoint's address belong to this machine?) fails both ways, on nodes that share an
address and on hosts whose names do not resolve to themselves.

srun runs this file by path with the harness's interpreter, so it imports only the
standard library.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Mapping

# Below the usual ephemeral range (32768 and up), where outgoing connections take ports.
PORT_BASE = 20000
PORT_SPAN = 10000
SCONTROL_SECONDS = 30


class RendezvousError(Exception):
    """The job lacks what a rendezvous needs; the message says what."""


def head_address(nodelist: str, run=subprocess.run) -> str:
    """The address of the allocation's first node: its NodeAddr, which is its name unless the site set one."""
    listed = run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=SCONTROL_SECONDS)
    hosts = listed.stdout.split()
    if listed.returncode != 0 or not hosts:
        raise RendezvousError(
            f"`scontrol show hostnames {nodelist}` gave no host: {listed.stderr.strip() or 'no output'}"
        )
    shown = run(["scontrol", "-o", "show", "node", hosts[0]], capture_output=True, text=True, timeout=SCONTROL_SECONDS)
    address = re.search(r"\bNodeAddr=(\S+)", shown.stdout)
    return address.group(1) if address else hosts[0]


def rendezvous_environment(environ: Mapping[str, str], head: str) -> dict[str, str]:
    """torchrun's rendezvous options for this node of the job, as PET_ variables."""
    job, node = environ["SLURM_JOB_ID"], environ["SLURM_NODEID"]
    port = PORT_BASE + int(job) % PORT_SPAN
    host = f"[{head}]" if ":" in head else head
    return {
        "PET_RDZV_ENDPOINT": f"{host}:{port}",
        "PET_RDZV_ID": f"slurm-{job}",
        "PET_RDZV_CONF": f"is_host={int(node == '0')}",
    }


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(
            f"usage: {os.path.basename(sys.executable)} {__file__} COMMAND...\n{__doc__.splitlines()[0]}",
            file=sys.stderr,
        )
        return 2
    missing = [name for name in ("SLURM_JOB_ID", "SLURM_NODEID", "SLURM_JOB_NODELIST") if name not in os.environ]
    try:
        if missing:
            raise RendezvousError(f"not inside a Slurm job step: {', '.join(missing)} unset")
        environment = rendezvous_environment(os.environ, head_address(os.environ["SLURM_JOB_NODELIST"]))
    except (RendezvousError, OSError, subprocess.SubprocessError) as error:
        print(f"trainspec rendezvous: {error}", file=sys.stderr)
        return 2
    try:
        os.execvpe(argv[0], argv, {**os.environ, **environment})
    except OSError as error:
        print(f"trainspec rendezvous: cannot run {argv[0]}: {error.strerror or error}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
