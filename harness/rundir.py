"""A run directory belongs to one live run at a time.

Two runs in one run directory would delete each other's outputs and leave a results.json
of only one of them. The controller claims the folder when the run starts: it writes its
process (pid and start time, so a reused pid is not taken for the owner) under a file lock,
and a second run finds a live owner there and is refused, naming it. An owner that died
(SIGKILL, a lost node) left its claim behind; it is taken over. The claim is also where a
folder that cannot hold a run (a file, a path that cannot be created, a folder that cannot
be written) is said in one line, before anything is written into it.

A spec's output dir inside it is its run's to fill, not to replace: a run that replaced
its output dir with a file or a link, or its `stderr.log` with a folder, fails for it, and a real
folder is put back (keeping what was found inside) to hold the record. Trees are removed without
recursion and without following links: `shutil.rmtree` recurses once per level, so a tree 1,500
folders deep ends in RecursionError half removed.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import stat
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


def record_interruption(run_dir: Path, began: float, meta: dict) -> Path | None:
    """results.json for a run interrupted before any spec started (while its specs were read and
    planned, which takes a while for thousands): no spec, `"interrupted": true`. Not when this run
    already wrote one, nor into a run directory another live run holds. Returns its path, if written."""
    from harness.records import write_results

    try:
        if (run_dir / "results.json").stat().st_mtime >= began - 1:
            return None
    except OSError:
        pass
    try:
        claim(run_dir)
    except RunDirError:
        return None
    try:
        return write_results(run_dir, [], {**meta, "interrupted": True})
    except OSError:
        return None
    finally:
        release(run_dir)


# What a run left in place of its output dir, kept inside the folder put back.
REPLACED_NAME = "output_dir.replaced"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW


def _scan(fd: int) -> list[str]:
    """Remove the files and links of the open folder `fd`; return its subfolders' names."""
    folders = []
    with os.scandir(fd) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                folders.append(entry.name)
            else:
                os.unlink(entry.name, dir_fd=fd)
    return folders


def remove_tree(path: Path) -> None:
    """Remove `path` (a folder and everything below it, or a file or link), however deep; OSError if it cannot.

    One folder is open at a time, entered by name and left through `..`, so neither the depth
    nor the length of the paths below it matters.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISDIR(mode):
        os.unlink(path)
        return
    fd = os.open(path, _DIR_FLAGS)
    try:
        pending = _scan(fd)
        above: list[tuple[str, list[str]]] = []
        while pending or above:
            if pending:
                name = pending.pop()
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
                above.append((name, pending))
                pending = _scan(fd)
                continue
            parent = os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = parent
            name, pending = above.pop()
            os.rmdir(name, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(path)


def fresh_dir(path: Path) -> None:
    """An empty folder at `path`, whatever was there."""
    remove_tree(path)
    path.mkdir(parents=True)


def _kind(path: Path) -> str:
    if path.is_symlink():
        return f"a symbolic link to {os.readlink(path)}"
    mode = os.lstat(path).st_mode
    return "a folder" if stat.S_ISDIR(mode) else "a file" if stat.S_ISREG(mode) else "something not a folder"


def restore_dir(path: Path) -> str | None:
    """Put a real folder back at `path` when the run replaced it; what it found there is kept inside
    the folder (as REPLACED_NAME). Returns what the run did, or None when the folder is as it was
    (or gone: the record's writer makes it again)."""
    if not os.path.lexists(path) or (path.is_dir() and not path.is_symlink()):
        return None
    found = _kind(path)
    aside = path.with_name(f".{path.name}.replaced")
    remove_tree(aside)
    os.rename(path, aside)
    path.mkdir()
    os.rename(aside, path / REPLACED_NAME)
    return f"the run replaced its output dir with {found} (kept as {path / REPLACED_NAME})"


def stream_problem(path: Path) -> str | None:
    """Why the harness cannot read the run's stream file `path` (stderr.log) any more, or None."""
    if not os.path.lexists(path) or (path.is_file() and not path.is_symlink()):
        return None
    return f"the run replaced {path.name} with {_kind(path)}; what it wrote to it is lost"
