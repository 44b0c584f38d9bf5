"""The history store: one SQLite file by default, a PostgreSQL server for a team, through SQLAlchemy Core.

Opening migrates the schema forward (Alembic, `migrations/`). Writers never lose rows: a
run's rows go in one transaction, so a run killed mid-write leaves either all of its rows or
none; on SQLite the file is in WAL mode, a writer takes the write lock up front
(`BEGIN IMMEDIATE`) and waits for another's, and a write that still meets a busy file is
tried again. Every failure to reach, read or write the store is a `StoreError`: callers turn
it into one warning and the run goes on.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event, exc

from harness.history.location import StoreError, shown
from harness.history.tables import runs, spec_runs

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Seconds a writer waits for another's lock before SQLite answers "database is locked", then tries left.
BUSY_SECONDS = 30
WRITE_TRIES = 5
# Any two-key number: who holds it migrates a PostgreSQL store while the others wait.
MIGRATION_LOCK = 0x7472_6169_6E73
T = TypeVar("T")


def _sqlite_engine(url: str) -> sa.Engine:
    path = Path(url.removeprefix("sqlite:///"))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise StoreError(f"history {path}: cannot make its folder ({error.strerror})") from None
    engine = sa.create_engine(url, connect_args={"timeout": BUSY_SECONDS})

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, _record: Any) -> None:
        # sqlite3's own transaction handling is off: SQLAlchemy's begin event below says BEGIN itself.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {BUSY_SECONDS * 1000}")
        # WAL: readers never block the writer; NORMAL sync is still safe against a killed process.
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection: sa.Connection) -> None:
        # A writer takes the lock before reading, so two writers never deadlock upgrading a read lock.
        immediate = connection.get_execution_options().get("immediate")
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _retry(what: Callable[[], T], url: str) -> T:
    """`what()`, again after a short wait while SQLite says the file is busy; StoreError otherwise."""
    for attempt in range(WRITE_TRIES):
        try:
            return what()
        except exc.OperationalError as error:
            busy = "locked" in str(error.orig) or "busy" in str(error.orig)
            if not busy or attempt == WRITE_TRIES - 1:
                raise StoreError(f"history {shown(url)}: {_first_line(error)}") from None
            time.sleep(0.2 * 2**attempt)
        except exc.SQLAlchemyError as error:
            raise StoreError(f"history {shown(url)}: {_first_line(error)}") from None
    raise AssertionError("unreachable")


def _first_line(error: exc.SQLAlchemyError) -> str:
    original = getattr(error, "orig", None) or error
    text = str(original).strip().splitlines()
    return f"{type(original).__name__}: {text[0] if text else ''}"


class Store:
    """A history store, opened (and migrated to this harness's schema) by `open_store`."""

    def __init__(self, engine: sa.Engine, url: str):
        self.engine = engine
        self.url = url

    @contextmanager
    def _writing(self) -> Iterator[sa.Connection]:
        with self.engine.connect().execution_options(immediate=True) as connection, connection.begin():
            yield connection

    def append(self, run: dict[str, Any], specs: list[dict[str, Any]]) -> int | None:
        """One run and its specs' rows, all or nothing: the run's id, or None when it (by its uid) is already here."""

        def write() -> int | None:
            with self._writing() as connection:
                if connection.execute(sa.select(runs.c.id).where(runs.c.uid == run["uid"])).first():
                    return None
                key = connection.execute(sa.insert(runs).values(**run)).inserted_primary_key
                assert key is not None  # an insert of one row always has one
                run_id = int(key[0])
                copied = {key: run[key] for key in ("commit", "commit_time", "created", "device_kind", "versions_key")}
                if specs:
                    connection.execute(sa.insert(spec_runs), [{**row, **copied, "run_id": run_id} for row in specs])
                return run_id

        return _retry(write, self.url)

    def query(self, statement: sa.Executable) -> list[dict[str, Any]]:
        def read() -> list[dict[str, Any]]:
            with self.engine.connect() as connection:
                return [dict(row._mapping) for row in connection.execute(statement)]

        return _retry(read, self.url)

    def close(self) -> None:
        self.engine.dispose()


def _migrate(engine: sa.Engine, url: str) -> None:
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    script = ScriptDirectory.from_config(config)
    head = script.get_current_head()
    with engine.connect() as connection:
        current = MigrationContext.configure(connection).get_current_revision()
    if current == head:
        return
    known = {revision.revision for revision in script.walk_revisions()}
    if current is not None and current not in known:
        raise StoreError(
            f"history {shown(url)}: its schema ({current}) is newer than this harness knows; upgrade trainspec"
        )
    with engine.connect().execution_options(immediate=True) as connection, connection.begin():
        if engine.dialect.name == "postgresql":
            # Released when the transaction ends; a second run waits, then finds the schema current.
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
        config.attributes["connection"] = connection
        try:
            command.upgrade(config, "head")
        except CommandError as error:
            raise StoreError(f"history {shown(url)}: {error}") from None


def open_store(url: str) -> Store:
    """The store at `url` (a SQLAlchemy URL from `location.resolve`), its schema current; StoreError otherwise."""
    try:
        if url.startswith("sqlite:"):
            engine = _sqlite_engine(url)
        else:
            # A server that does not answer costs the run seconds, not minutes.
            engine = sa.create_engine(url, connect_args={"connect_timeout": 10}, pool_pre_ping=True)
    except (exc.ArgumentError, exc.NoSuchModuleError, ImportError) as error:
        hint = "; install its driver: pip install 'psycopg[binary]'" if "psycopg" in str(error) else ""
        raise StoreError(f"history {shown(url)}: {error}{hint}") from None
    try:
        _retry(lambda: _migrate(engine, url), url)
    except StoreError:
        engine.dispose()
        raise
    return Store(engine, url)
