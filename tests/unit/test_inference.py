"""The inference stage's server process: whatever it starts is gone once it is stopped."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import psutil

from harness.inference.stage import Server

from ..conftest import gone

# The middle process exits at once, so the sleeper is orphaned in a session of its own,
# outside the server's group and no longer its descendant (a daemonising server does this).
DOUBLE_FORK = r"""
import subprocess, sys, time
sleeper = (
    "import subprocess, sys; "
    "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)'], start_new_session=True); "
    "open(sys.argv[1], 'w').write(str(p.pid))"
)
subprocess.run([sys.executable, "-c", sleeper, sys.argv[1]], check=True)
time.sleep(120)
"""


def test_stopping_a_server_ends_the_orphan_it_left_outside_its_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "sleeper.pid"
    server = Server([sys.executable, "-c", DOUBLE_FORK, str(pid_file)], tmp_path, dict(os.environ), tmp_path, port=0)
    deadline = time.monotonic() + 20
    while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    sleeper = psutil.Process(int(pid_file.read_text()))
    while sleeper.ppid() != os.getpid() and time.monotonic() < deadline:
        time.sleep(0.05)  # the middle process is on its way out
    # Orphaned, and adopted by us (the harness is its runs' subreaper), not the server's any more.
    assert sleeper.ppid() == os.getpid() and os.getpgid(sleeper.pid) != os.getpgid(server.proc.pid)
    server.stop()
    assert gone(sleeper.pid) and server.proc.returncode is not None
