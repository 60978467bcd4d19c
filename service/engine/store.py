"""Where the engine's rows live: a SQLite file in WAL mode, or a private in-memory database.

Design. The state *is* the rows (``rows.py``): every request writes back what it changed into
the open transaction, and the connection commits once per event-loop pass for every request that
arrived in it (group commit), answering them only after the ``COMMIT`` returned — with
``synchronous=FULL``, after the WAL was fsynced. A start opens the file and reads nothing up
front but the tasks that have timers (pending and acquired ones), so it takes the same time with
100,000 waiting requests as with none; memory holds only what the requests in flight touch.
Retention deletes finished lineages, and freed pages go back with ``incremental_vacuum``.

Failures. A file that SQLite cannot read, fails ``quick_check``, holds an undecodable old
snapshot or journal entry, or is empty although it exists → ``CorruptDatabase`` naming the file:
never a silent empty state (a new database is built under a temporary name and renamed into
place, so an existing empty file can only be damage). A database migrated by a newer Mailgate →
``SchemaTooNew``. A failing write (disk full, I/O error) → ``EngineUnavailable``; the connection
rolls back and the state forgets what it read, so nothing uncommitted stays visible. Schema
changes are the numbered ``schema/*.sql`` files, applied in order and recorded in
``schema_migrations``; a data dir from before 0002 is converted once (``legacy.py``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import msgspec

from service.engine import legacy
from service.engine.errors import CorruptDatabase, EngineError, EngineUnavailable, SchemaTooNew
from service.engine.lock import DataDirLock
from service.engine.rows import Database, migrations
from service.engine.state import IndexedState

if TYPE_CHECKING:
    from pathlib import Path

logger = logging.getLogger(__name__)

DB_FILE = "engine.sqlite3"
LOCK_FILE = "engine.lock"
SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
#: The WAL file is truncated back to this size after checkpoints.
WAL_SIZE_LIMIT_BYTES = 16 * 1024 * 1024
#: SQLite's page cache (KiB): the hot part of the tables and indexes.
PAGE_CACHE_KIB = 32 * 1024
LOCAL_PIDS_KEY = "local_pids"


@dataclass(slots=True)
class Opened:
    """A state over its rows, and the process ids that died with its last writer."""

    state: IndexedState
    dead_pids: frozenset[str] = field(default_factory=frozenset)


class Store(Protocol):
    #: Whether a commit reaches disk; when False, responses need not wait for one.
    durable: bool

    def open(self) -> Opened: ...
    def claim(self, pid: str) -> None: ...
    def close(self) -> None: ...


class MemoryStore:
    """The in-memory engine's store: a private database that dies with the process."""

    durable = False

    def open(self) -> Opened:
        return Opened(state=IndexedState())

    def claim(self, pid: str) -> None:
        return None

    def close(self) -> None:
        return None


class SqliteStore:
    """``Store`` over ``<data_dir>/engine.sqlite3``; see the module docstring."""

    durable = True

    def __init__(self, data_dir: Path, *, synchronous: str = "FULL") -> None:
        mode = synchronous.upper()
        if mode not in SYNCHRONOUS_MODES:
            msg = f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, not {synchronous!r}"
            raise ValueError(msg)
        self.data_dir = data_dir
        self.path = data_dir / DB_FILE
        self._synchronous = mode
        self._lock = DataDirLock(data_dir / LOCK_FILE)
        self._db: sqlite3.Connection | None = None
        self._database: Database | None = None

    def open(self) -> Opened:
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            msg = f"cannot create the data dir {self.data_dir}: {exc}"
            raise EngineError(msg) from exc
        self._lock.acquire()
        try:
            if not self.path.exists():
                self._create()
            self._db = self._connect()
            self._check()
            return self._load()
        except BaseException:
            self.close()
            raise

    def claim(self, pid: str) -> None:
        """Record ``pid`` as this data dir's embedded process (in the open transaction)."""
        assert self._database is not None
        self._database.write(
            "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
            (LOCAL_PIDS_KEY, msgspec.json.encode([pid])),
        )

    def close(self) -> None:
        db, self._db = self._db, None
        self._database = None
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                if db.in_transaction:
                    db.execute("ROLLBACK")
                db.execute("PRAGMA incremental_vacuum").fetchall()
                db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            with contextlib.suppress(sqlite3.Error):
                db.close()
        self._lock.release()

    # -- internals --------------------------------------------------------------------------

    def _create(self) -> None:
        """Build an empty database under a temporary name and move it into place."""
        fresh = self.path.with_name(self.path.name + ".new")
        fresh.unlink(missing_ok=True)
        db = sqlite3.connect(fresh, autocommit=True)
        try:
            db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            db.execute("PRAGMA journal_mode = WAL")
            self._migrate(db, applied=0)
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            db.close()
        fd = os.open(fresh, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        fresh.replace(self.path)
        dir_fd = os.open(self.data_dir, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def _connect(self) -> sqlite3.Connection:
        if self.path.stat().st_size == 0:
            raise CorruptDatabase(self.path, "the file is empty")
        try:
            db = sqlite3.connect(self.path, autocommit=True, check_same_thread=False)
            db.execute("PRAGMA journal_mode = WAL")
            db.execute(f"PRAGMA synchronous = {self._synchronous}")
            db.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT_BYTES}")
            db.execute(f"PRAGMA cache_size = -{PAGE_CACHE_KIB}")
        except sqlite3.DatabaseError as exc:
            raise CorruptDatabase(self.path, str(exc)) from exc
        return db

    def _check(self) -> None:
        assert self._db is not None
        try:
            problems = [row[0] for row in self._db.execute("PRAGMA quick_check")]
            applied = self._db.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise CorruptDatabase(self.path, str(exc)) from exc
        if problems != ["ok"]:
            raise CorruptDatabase(self.path, "; ".join(problems[:5]))
        known = migrations()
        if not known:
            msg = "the engine's schema files (service/engine/schema/*.sql) are not installed"
            raise EngineError(msg)
        supported = known[-1][0]
        if applied is None:
            raise CorruptDatabase(self.path, "no schema version recorded")
        if applied > supported:
            raise SchemaTooNew(self.path, applied, supported)
        if applied < supported:
            self._migrate(self._db, applied=applied)

    def _migrate(self, db: sqlite3.Connection, *, applied: int) -> None:
        for version, name, sql in migrations():
            if version <= applied:
                continue
            db.execute("BEGIN IMMEDIATE")
            try:
                db.executescript(sql)
                db.execute(
                    "INSERT INTO schema_migrations(version, name, applied_at) VALUES (?, ?, ?)",
                    (version, name, int(time.time())),
                )
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise

    def _load(self) -> Opened:
        assert self._db is not None
        database = Database(self._db)
        state = IndexedState(database)
        try:
            pids = self._db.execute(
                "SELECT value FROM meta WHERE key = ?", (LOCAL_PIDS_KEY,)
            ).fetchone()
            if legacy.pending_conversion(self._db):
                legacy.convert(self.path, self._db, state)
                database.commit()
        except (sqlite3.DatabaseError, EngineUnavailable) as exc:
            with contextlib.suppress(EngineUnavailable):
                database.rollback()
            raise CorruptDatabase(self.path, str(exc.__cause__ or exc)) from exc
        except BaseException:
            with contextlib.suppress(EngineUnavailable):
                database.rollback()
            raise
        self._database = database
        dead = frozenset(msgspec.json.decode(pids[0], type=list[str])) if pids else frozenset()
        return Opened(state=state, dead_pids=dead)
