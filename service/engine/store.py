"""Where the engine's rows live: a SQLite file in WAL mode, or a private in-memory database.

Design. The state *is* the rows (``rows.py``): every request writes back what it changed into
the open transaction, and the connection commits once per event-loop pass for every request that
arrived in it (group commit), answering them only after the ``COMMIT`` returned — with
``synchronous=FULL``, after the WAL was fsynced. A start opens the file and reads nothing up
front but the tasks that have timers (pending and acquired ones), so it takes the same time with
100,000 waiting requests as with none; memory holds only what the requests in flight touch.
Retention deletes finished lineages, and freed pages go back with ``incremental_vacuum``.

Checkpoints. SQLite's automatic checkpoint copies the WAL into the file inside a commit, on the
event loop, with an fsync of the database file. A thread of the store's own does that copying
(``PASSIVE``, every ``CHECKPOINT_INTERVAL_S``), so most commits only append to the WAL. Under
steady writes the thread's checkpoint never quite completes (commits keep appending behind it)
and the WAL would never restart, so the writer keeps an automatic checkpoint at
``WAL_AUTOCHECKPOINT_PAGES``: it finds nearly every frame already copied, copies the rest, and
the WAL restarts (and is truncated to ``WAL_SIZE_LIMIT_BYTES``).

Failures. A file that SQLite cannot read, is shorter than its header says, fails
``quick_check`` (before start up to ``QUICK_CHECK_AT_START_MAX_BYTES``, in the checkpoint thread
above, logged as an error), holds an undecodable old snapshot or journal entry, or is empty
although it exists → ``CorruptDatabase`` naming the file:
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
import threading
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
PAGE_CACHE_KIB = 256 * 1024
#: How often the checkpoint thread copies the WAL into the database file.
CHECKPOINT_INTERVAL_S = 0.1
#: WAL pages after which a commit finishes the checkpoint itself (and the WAL restarts).
WAL_AUTOCHECKPOINT_PAGES = 65_536
#: Files up to this size get a full ``quick_check`` before the engine starts; bigger ones get
#: the O(1) checks at start and the full one in the checkpoint thread (it reads every page:
#: 1.7 s for 2 GB here, most of a restart).
QUICK_CHECK_AT_START_MAX_BYTES = 256 * 1024 * 1024
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
        self._checkpointer: Checkpointer | None = None

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
            full_check = self.path.stat().st_size <= QUICK_CHECK_AT_START_MAX_BYTES
            self._check(full=full_check)
            opened = self._load()
        except BaseException:
            self.close()
            raise
        self._checkpointer = Checkpointer(self.path, check_first=not full_check)
        self._checkpointer.start()
        return opened

    def claim(self, pid: str) -> None:
        """Record ``pid`` as this data dir's embedded process (in the open transaction)."""
        assert self._database is not None
        self._database.write(
            "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
            (LOCAL_PIDS_KEY, msgspec.json.encode([pid])),
        )

    def close(self) -> None:
        checkpointer, self._checkpointer = self._checkpointer, None
        if checkpointer is not None:
            checkpointer.stop()
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
            db.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
        except sqlite3.DatabaseError as exc:
            raise CorruptDatabase(self.path, str(exc)) from exc
        return db

    def _check(self, *, full: bool) -> None:
        assert self._db is not None
        try:
            if full:
                problems = [row[0] for row in self._db.execute("PRAGMA quick_check")]
            else:
                problems = self._cheap_problems()
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

    def _cheap_problems(self) -> list[str]:
        """What can be checked without reading every page: the file holds the pages SQLite
        counts (a truncated copy does not), and the schema reads."""
        assert self._db is not None
        pages = self._db.execute("PRAGMA page_count").fetchone()[0]
        page_size = self._db.execute("PRAGMA page_size").fetchone()[0]
        self._db.execute("SELECT count(*) FROM sqlite_schema").fetchone()
        if self.path.stat().st_size < pages * page_size:
            return [f"the file is shorter than its {pages} pages"]
        return ["ok"]

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


class Checkpointer:
    """Copies the WAL into the database file from a thread of its own; see the module docstring.

    With ``check_first`` it runs ``quick_check`` before its first checkpoint and logs damage as
    an error (the engine is already serving: requests that meet the damage fail on their own).
    """

    def __init__(self, path: Path, *, check_first: bool) -> None:
        self._path = path
        self._check_first = check_first
        self._stopping = threading.Event()
        self._db = sqlite3.connect(path, autocommit=True, check_same_thread=False)
        self._thread = threading.Thread(target=self._run, name="engine-checkpoint", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread; a ``quick_check`` still running is interrupted (not reported)."""
        self._stopping.set()
        self._db.interrupt()
        self._thread.join()

    def _run(self) -> None:
        db = self._db
        try:
            if self._check_first:
                self._quick_check(db)
            while not self._stopping.wait(CHECKPOINT_INTERVAL_S):
                try:
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except sqlite3.Error as exc:
                    logger.warning("engine: checkpoint of %s failed: %s", self._path, exc)
        finally:
            db.close()

    def _quick_check(self, db: sqlite3.Connection) -> None:
        started = time.perf_counter()
        try:
            problems = [row[0] for row in db.execute("PRAGMA quick_check")]
        except sqlite3.Error as exc:
            if self._stopping.is_set():
                return
            problems = [str(exc)]
        if problems != ["ok"]:
            logger.error(
                "engine: database %s is damaged (quick_check): %s",
                self._path,
                "; ".join(problems[:5]),
            )
        else:
            logger.info(
                "engine: quick_check of %s ok in %.1f s", self._path, time.perf_counter() - started
            )
