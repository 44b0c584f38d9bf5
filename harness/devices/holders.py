"""Who holds which devices: one file per lease holder, the pool's one truth about what is held.

A holder is alive while the process that leased (pid and start time, so a reused pid is not
taken for its predecessor) or a process of the run it started (its process group) is. The
pool's state file only queues waiters: whatever becomes of it (deleted, garbled, made
unwritable), what is held is read again from these files, never assumed free.
"""

from __future__ import annotations

import json
from pathlib import Path

import psutil

from harness.atomic import atomic_write_text
from harness.process import group_alive

HOLDER_KEYS = {"token", "owner", "name", "run", "devices", "memory", "start", "expected"}


def process_key(pid: int) -> list:
    try:
        return [pid, psutil.Process(pid).create_time()]
    except psutil.Error:
        return [pid, 0.0]


def is_alive(key: list) -> bool:
    """The same process (not a reuse of its pid) and not a zombie waiting to be reaped."""
    pid, started = key
    try:
        process = psutil.Process(pid)
        return process.create_time() == started and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def holder_alive(holder: dict) -> bool:
    """Its owner lives, or a process of the run it started does (the run's group, noted by `Lease.attach`):
    a harness killed with SIGKILL whose run ignores the SIGTERM it was sent still computes on the devices."""
    return is_alive(holder["owner"]) or ("group" in holder and group_alive(holder["group"]))


def read_holders(folder: Path) -> dict[str, dict]:
    """The live holders in `folder`, by token; a dead holder's file is removed."""
    held = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            holder = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not (isinstance(holder, dict) and HOLDER_KEYS <= holder.keys() and path.stem == holder["token"]):
            continue
        if holder_alive(holder):
            held[holder["token"]] = holder
        else:
            path.unlink(missing_ok=True)
    return held


def write_holders(folder: Path, holders: dict[str, dict]) -> None:
    """Make `folder` hold exactly `holders` (a file written only where it changed); OSError when it cannot."""
    folder.mkdir(parents=True, exist_ok=True)
    on_disk = {path.stem: path for path in folder.glob("*.json")}
    for token, holder in holders.items():
        text = json.dumps(holder)
        if token not in on_disk or on_disk[token].read_text() != text:
            atomic_write_text(folder / f"{token}.json", text)
    for token in on_disk.keys() - holders.keys():
        on_disk[token].unlink(missing_ok=True)
