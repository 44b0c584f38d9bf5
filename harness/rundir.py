"""A run directory belongs to one live run at a time.

Two runs in one run directory would delete each other's outputs and leave a results.json
of only one of them. The controller claims the folder when the run starts: it writes its
process (pid and start time, so a reused pid is not taken for the owner) under a file lock,
and a second run finds a live owner there and is refused, naming it. An owner that died
(SIGKILL, a lost node) left its claim behind; it is taken over. The claim is also where a
folder that cannot hold a run (a file, a path that cannot be created, a folder that cannot
be written) is said in one line, before anything is written into it.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import warnings
from pathlib import Path

from filelock import FileLock, Timeout

from harness.atomic import KeptFileWarning, atomic_write_text, read_json
from harness.devices.leases import is_alive, process_key

OWNER_FILE = "owner.json"
LOCK_SECONDS = 10.0
# Room set aside for the run's own records (results.json, the report, junit.xml): a spec that fills the
# run directory's disk fails, but the records of the run are still written.
ROOM_FILE = ".room-for-records"
ROOM_BYTES = 4 << 20


class RunDirError(Exception):
    """The run directory cannot be used by this run (bad usage: exit 2); one line."""


def claim(run_dir: Path) -> None:
    """Create `run_dir` if needed and make it this process's, or raise RunDirError saying why not."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise RunDirError(
            f"the run directory {run_dir} is a file; give a folder (or a path to create) to --run-dir"
        ) from None
    except OSError as error:
        raise RunDirError(f"the run directory {run_dir} cannot be created: {error.strerror or error}") from None
    try:
        with FileLock(str(run_dir / f".{OWNER_FILE}.lock"), timeout=LOCK_SECONDS), warnings.catch_warnings():
            # A damaged claim is no claim: this run's replaces it.
            warnings.simplefilter("ignore", KeptFileWarning)
            owner = read_json(run_dir / OWNER_FILE, "run directory's owner")
            if owner and (why := _in_use(owner)):
                raise RunDirError(
                    f"the run directory {run_dir} is in use by {why}; wait for it to end, or give another --run-dir"
                )
            mine = {"process": process_key(os.getpid()), "since": _dt.datetime.now().isoformat(timespec="seconds")}
            atomic_write_text(run_dir / OWNER_FILE, json.dumps(mine))
    except Timeout:
        raise RunDirError(
            f"the run directory {run_dir} is being claimed by another run (its lock was held for {LOCK_SECONDS:.0f} s)"
        ) from None
    except OSError as error:
        raise RunDirError(f"the run directory {run_dir} is not writable: {error.strerror or error}") from None


def _in_use(owner: dict) -> str | None:
    """'a live run (pid N, since T)' when the recorded owner is another process that still runs."""
    process = owner.get("process")
    if not (isinstance(process, list) and len(process) == 2 and isinstance(process[0], int)):
        return None
    if process[0] == os.getpid() or not is_alive(process):
        return None
    return f"a live run (pid {process[0]}, since {owner.get('since', 'an unknown time')})"


def release(run_dir: Path) -> None:
    """Give the folder up, if it is still this process's (a run that took over a dead claim may hold it now)."""
    path = run_dir / OWNER_FILE
    try:
        with FileLock(str(run_dir / f".{OWNER_FILE}.lock"), timeout=LOCK_SECONDS), warnings.catch_warnings():
            warnings.simplefilter("ignore", KeptFileWarning)
            owner = read_json(path, "run directory's owner") or {}
            if owner.get("process") == process_key(os.getpid()):
                path.unlink()
    except (OSError, Timeout):
        pass  # a claim left behind is taken over by the next run, its owner being dead


def keep_room(run_dir: Path) -> None:
    """Set aside ROOM_BYTES in the run directory until `give_room`; nothing when the disk has no room now."""
    room = run_dir / ROOM_FILE
    try:
        with open(room, "wb") as file:
            os.posix_fallocate(file.fileno(), 0, ROOM_BYTES)
    except OSError:
        room.unlink(missing_ok=True)


def give_room(run_dir: Path) -> None:
    """Free the room kept for the records, just before they are written."""
    try:
        (run_dir / ROOM_FILE).unlink(missing_ok=True)
    except OSError:
        pass
