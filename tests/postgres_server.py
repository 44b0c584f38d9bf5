"""A real PostgreSQL server for the history tests, started from Debian's packages in a temporary folder.

The server refuses to run as root: as root it runs as an unprivileged system user. Where the
binaries are missing the tests skip with the reason, unless TRAINSPEC_REQUIRE_POSTGRES=1 (CI)
makes that a failure.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

SERVICE_USER = "nobody"


def _bindir() -> Path | None:
    pg_config = shutil.which("pg_config")
    if pg_config:
        done = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        if done.returncode == 0 and (Path(done.stdout.strip()) / "initdb").exists():
            return Path(done.stdout.strip())
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    return versions[-1].parent if versions else None


def unavailable(reason: str) -> None:
    if os.environ.get("TRAINSPEC_REQUIRE_POSTGRES") == "1":
        pytest.fail(f"TRAINSPEC_REQUIRE_POSTGRES=1 but PostgreSQL cannot run: {reason}", pytrace=False)
    pytest.skip(f"PostgreSQL not available: {reason}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def postgres_server() -> Iterator[str]:
    """The URL of a fresh server's `postgres` database, trust-authenticated on loopback; stopped after."""
    bindir = _bindir()
    if bindir is None:
        unavailable("no initdb (install Debian's postgresql package)")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        unavailable("psycopg is not installed (pip install 'psycopg[binary]')")
    folder = Path(tempfile.mkdtemp(prefix="trainspec-pg-"))
    data = folder / "data"
    prefix: list[str] = []
    if os.getuid() == 0:
        try:
            user = pwd.getpwnam(SERVICE_USER)
        except KeyError:
            unavailable(f"running as root and there is no {SERVICE_USER} user to run the server as")
        os.chown(folder, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", SERVICE_USER, "--"]
    port = _free_port()
    log = folder / "server.log"
    try:
        init = subprocess.run(
            [*prefix, str(bindir / "initdb"), "-A", "trust", "-U", "postgres", "-E", "UTF8", "-D", str(data)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        if init.returncode != 0:
            unavailable(f"initdb failed: {init.stderr.strip()[-300:]}")
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        start = subprocess.run(
            [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "120"]
            + ["start"],
            capture_output=True,
            text=True,
            timeout=180,
        )
        if start.returncode != 0:
            said = log.read_text()[-300:] if log.exists() else ""
            unavailable(f"pg_ctl start failed: {start.stdout.strip()[-300:]} {said}")
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        if data.exists():
            subprocess.run(
                [*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                capture_output=True,
                timeout=120,
            )
        shutil.rmtree(folder, ignore_errors=True)


def fresh_database(server: str, name: str) -> str:
    """A new empty database on the server, by URL."""
    import psycopg

    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')
    return server.rsplit("/", 1)[0] + f"/{name}"
