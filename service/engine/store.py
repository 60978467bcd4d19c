"""The durable journal: SQLite in WAL mode, a journal of entries plus one snapshot.

Design. Every state-changing request is appended to ``journal`` exactly as it arrived, with the
engine time it was applied at; so are ticks that settled promises or released leases, and
retention purges (see ``journal.py``). Because ``IndexedState.apply(now, request)`` is
deterministic, the state is ``snapshot`` + replay of the journal rows after it. Appends are
batched by the connection (group commit: one ``BEGIN … COMMIT`` per event-loop pass) and a batch
is answered only after its ``COMMIT`` returned, which with ``synchronous=FULL`` means after the
WAL was fsynced.

Compaction. When the journal tail grows past ``max(SNAPSHOT_MIN_ENTRIES, live promises)`` rows,
the whole state is written as one msgpack snapshot and the rows it covers are deleted in the
same transaction; freed pages are returned with ``incremental_vacuum``. The threshold grows with
the state, so the snapshot's cost per request stays flat while recovery replays at most about
one journal row per live promise. Retention (``purge`` entries) removes finished lineages, so
a steady stream of finished workflows does not grow the file.

Failures. A file that SQLite cannot read, fails ``quick_check``, holds an undecodable snapshot or
journal row, or is empty although it exists → ``CorruptDatabase`` naming the file: never a silent
empty state (a new database is built under a temporary name and renamed into place, so an
existing empty file can only be damage). A database migrated by a newer Mailgate →
``SchemaTooNew``. A failing write (disk full, I/O error) → ``EngineUnavailable`` after a
rollback: the connection then reloads the state from disk, so nothing uncommitted stays visible.
Schema changes are the numbered ``schema/*.sql`` files, applied in order and recorded in
``schema_migrations``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import time
from importlib import resources
from typing import TYPE_CHECKING

import msgspec

from service.engine.errors import CorruptDatabase, EngineError, EngineUnavailable, SchemaTooNew
from service.engine.journal import Entry, Loaded, replay
from service.engine.lock import DataDirLock
from service.engine.state import IndexedState, Snapshot

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

logger = logging.getLogger(__name__)

DB_FILE = "engine.sqlite3"
LOCK_FILE = "engine.lock"
SYNCHRONOUS_MODES = ("OFF", "NORMAL", "FULL", "EXTRA")
#: Journal rows tolerated after the snapshot before a new one is written (and at least one per
#: live promise, so snapshots stay rare when the state is large).
SNAPSHOT_MIN_ENTRIES = 20_000
#: The WAL file is truncated back to this size after checkpoints.
WAL_SIZE_LIMIT_BYTES = 16 * 1024 * 1024
LOCAL_PIDS_KEY = "local_pids"


def migrations() -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` for every ``schema/NNNN_*.sql``, in order."""
    found = []
    for item in resources.files("service.engine").joinpath("schema").iterdir():
        if item.name.endswith(".sql"):
            found.append((int(item.name.split("_", 1)[0]), item.name, item.read_text()))
    return sorted(found)


class SqliteJournal:
    """``Journal`` over ``<data_dir>/engine.sqlite3``; see the module docstring."""

    durable = True

    def __init__(
        self,
        data_dir: Path,
        *,
        synchronous: str = "FULL",
        snapshot_min_entries: int = SNAPSHOT_MIN_ENTRIES,
    ) -> None:
        mode = synchronous.upper()
        if mode not in SYNCHRONOUS_MODES:
            msg = f"synchronous must be one of {', '.join(SYNCHRONOUS_MODES)}, not {synchronous!r}"
            raise ValueError(msg)
        self.data_dir = data_dir
        self.path = data_dir / DB_FILE
        self._synchronous = mode
        self._snapshot_min_entries = snapshot_min_entries
        self._lock = DataDirLock(data_dir / LOCK_FILE)
        self._db: sqlite3.Connection | None = None
        self._next_seq = 1
        self._tail = 0

    # -- Journal ----------------------------------------------------------------------------

    def open(self) -> Loaded:
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

    def reload(self) -> Loaded:
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
        try:
            self._db = self._connect()
        except OSError as exc:
            msg = f"cannot reopen {self.path}: {exc}"
            raise EngineError(msg) from exc
        return self._load()

    def claim(self, pid: str) -> None:
        self._write(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)",
                (LOCAL_PIDS_KEY, msgspec.json.encode([pid])),
            )
        )

    def append(self, entries: list[Entry]) -> None:
        first = self._next_seq
        rows = [(first + i, e.op, e.at, e.body) for i, e in enumerate(entries)]
        self._write(
            lambda db: db.executemany(
                "INSERT INTO journal(seq, op, at, body) VALUES (?, ?, ?, ?)", rows
            )
        )
        self._next_seq = first + len(rows)
        self._tail += len(rows)

    def wants_snapshot(self, promises: int) -> bool:
        return self._tail >= max(self._snapshot_min_entries, promises)

    def write_snapshot(self, snapshot: Snapshot) -> None:
        data = msgspec.msgpack.encode(snapshot)
        through = self._next_seq - 1

        def write(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT OR REPLACE INTO snapshot(id, seq, data) VALUES (1, ?, ?)", (through, data)
            )
            db.execute("DELETE FROM journal WHERE seq <= ?", (through,))

        started = time.perf_counter()
        self._write(write)
        self._tail = 0
        with contextlib.suppress(sqlite3.Error):
            assert self._db is not None
            self._db.execute("PRAGMA incremental_vacuum").fetchall()
        logger.info(
            "engine: snapshot of %d promise(s), %d bytes, in %.0f ms",
            len(snapshot.promises),
            len(data),
            (time.perf_counter() - started) * 1000,
        )

    def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            with contextlib.suppress(sqlite3.Error):
                db.close()
        self._lock.release()

    # -- internals --------------------------------------------------------------------------

    def _write(self, body: Callable[[sqlite3.Connection], object]) -> None:
        """Run ``body(db)`` in one transaction; any failure is rolled back and reported as
        ``EngineUnavailable`` (a ``ConnectorError``, so the SDK may retry)."""
        db = self._db
        if db is None:
            raise EngineUnavailable(RuntimeError("the engine database is closed"))
        try:
            db.execute("BEGIN IMMEDIATE")
            body(db)
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            raise EngineUnavailable(exc) from exc

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

    def _load(self) -> Loaded:
        assert self._db is not None
        try:
            row = self._db.execute("SELECT seq, data FROM snapshot WHERE id = 1").fetchone()
            pids = self._db.execute(
                "SELECT value FROM meta WHERE key = ?", (LOCAL_PIDS_KEY,)
            ).fetchone()
            if row is None:
                through, state = 0, IndexedState()
            else:
                through, state = row[0], _decode_snapshot(self.path, row[1])
            self._tail = 0
            self._next_seq = through + 1
            for seq, op, at, body in self._db.execute(
                "SELECT seq, op, at, body FROM journal WHERE seq > ? ORDER BY seq", (through,)
            ):
                try:
                    replay(state, op, at, body)
                except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
                    raise CorruptDatabase(self.path, f"journal entry {seq}: {exc}") from exc
                self._tail += 1
                self._next_seq = seq + 1
        except sqlite3.DatabaseError as exc:
            raise CorruptDatabase(self.path, str(exc)) from exc
        dead = frozenset(msgspec.json.decode(pids[0], type=list[str])) if pids else frozenset()
        return Loaded(state=state, dead_pids=dead)


def _decode_snapshot(path: Path, data: bytes) -> IndexedState:
    try:
        return IndexedState.from_snapshot(msgspec.msgpack.decode(data, type=Snapshot))
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise CorruptDatabase(path, f"snapshot: {exc}") from exc
