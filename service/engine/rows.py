"""The engine's state as SQLite rows, behind the dict surface the SDK's state machine uses.

``ServerState`` keeps promises, tasks and schedules in dicts and mutates the objects it gets from
them. These mappings give it the same surface over tables: reading a key decodes its row into the
SDK's own struct and keeps that object *live* until ``release``; ``flush`` writes back every live
object whose encoding changed, with the index rows that go with it (tags, awaiters, the timeout
timer), inside the open transaction. Only what a request touches is ever in memory, a start
reads nothing up front, and the rows *are* the state: there is no journal to replay.

Every SQLite failure is reported as ``EngineUnavailable``: the caller rolls back and ``forget``s.
SQL is built from table names and clauses that are constants here; every value is bound.
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from collections.abc import Iterator, MutableMapping
from importlib import resources
from typing import Any, ClassVar

import msgspec
from resonate.connections.local import DurablePromise, ScheduleStub, Task

from service.engine.errors import EngineUnavailable

ORIGIN_SEP = ":"
#: The character after ``:``: ids ``<root>:…`` sort in ``[<root>:, <root>;)``.
LINEAGE_END = ";"
IN_LINEAGE = "(id = ? OR (id >= ? AND id < ?))"
#: Objects kept decoded after their request, most recently used first (a hit skips a read).
WARM_OBJECTS = 4096
#: A search walks the index of its rarest tag; counting stops here (a cheap, bounded estimate).
SEARCH_COUNT_CAP = 1000
#: Tags kept out of the tag index: on nearly every promise with one or two values, so each
#: insert would dirty a random page of a huge index range, and no one searches by them (a search
#: that does still answers exactly, filtering decoded promises page by page).
UNINDEXED_TAGS = frozenset({"resonate:scope", "resonate:target"})
#: What a search walks when no tag is narrower: the id index, or the pending promises.
ID = "id"
PENDING = "pending"


class Search(msgspec.Struct, frozen=True):
    """A ``promise.search`` in the tables' terms; ``glob`` is SQLite GLOB syntax."""

    state: str | None
    tags: dict[str, str]
    limit: int
    cursor: str | None
    glob: str | None
    exact_id: str | None


def migrations() -> list[tuple[int, str, str]]:
    """``(version, name, sql)`` for every ``schema/NNNN_*.sql``, in order."""
    found = []
    for item in resources.files("service.engine").joinpath("schema").iterdir():
        if item.name.endswith(".sql"):
            found.append((int(item.name.split("_", 1)[0]), item.name, item.read_text()))
    return sorted(found)


def memory_database() -> Database:
    """A private in-memory database with the engine's tables (the in-memory engine, tests)."""
    db = sqlite3.connect(":memory:", autocommit=True, check_same_thread=False)
    for _, _, sql in migrations():
        db.executescript(sql)
    return Database(db)


class Database:
    """One SQLite connection and its transaction: opened by the first write, ended by the owner."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.connection = db

    def read(self, sql: str, args: tuple[Any, ...] = ()) -> list[Any]:
        try:
            return self.connection.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise EngineUnavailable(exc) from exc

    def write(self, sql: str, args: tuple[Any, ...] = ()) -> None:
        self.write_many(sql, [args])

    def write_many(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        try:
            if not self.connection.in_transaction:
                self.connection.execute("BEGIN IMMEDIATE")
            self.connection.executemany(sql, rows)
        except sqlite3.Error as exc:
            raise EngineUnavailable(exc) from exc

    @property
    def dirty(self) -> bool:
        """Whether something was written since the last commit or rollback."""
        return self.connection.in_transaction

    def commit(self) -> None:
        try:
            if self.connection.in_transaction:
                self.connection.execute("COMMIT")
        except sqlite3.Error as exc:
            raise EngineUnavailable(exc) from exc

    def rollback(self) -> None:
        try:
            if self.connection.in_transaction:
                self.connection.execute("ROLLBACK")
        except sqlite3.Error as exc:
            raise EngineUnavailable(exc) from exc


class _Rows[T: msgspec.Struct](MutableMapping[str, T]):
    """A table as a dict of the SDK's structs; see the module docstring."""

    table: ClassVar[str]
    kind: ClassVar[type]
    #: The column that orders iteration (creation order where the table keeps one).
    order: ClassVar[str] = "id"
    #: A column the state machine sets beside the object (it is not in the SDK's struct).
    staged_column: ClassVar[str | None] = None

    def __init__(self, db: Database) -> None:
        self._db = db
        self._live: dict[str, T] = {}
        self._read: dict[str, Any] = {}  # key -> what the row held when read (None: no row)
        self._gone: set[str] = set()
        self._warm: OrderedDict[str, tuple[T, Any]] = OrderedDict()  # key -> (object, its row)
        self._staged: dict[str, Any] = {}  # key -> value of staged_column, written at flush
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder: msgspec.msgpack.Decoder[T] = msgspec.msgpack.Decoder(self.kind)

    # -- the dict surface ---------------------------------------------------------------

    def __getitem__(self, key: str) -> T:
        obj = self._live.get(key)
        if obj is not None:
            return obj
        if key in self._gone or not isinstance(key, str):
            raise KeyError(key)
        obj = self._rewarm(key) or self._load(key)
        if obj is None:
            raise KeyError(key)
        return obj

    def __setitem__(self, key: str, obj: T) -> None:
        if key not in self._live and key not in self._read and self._rewarm(key) is None:
            self._load(key)
        self._gone.discard(key)
        self._live[key] = obj

    def __delitem__(self, key: str) -> None:
        self[key]  # raises KeyError as a dict would
        del self._live[key]
        self._gone.add(key)

    def __contains__(self, key: object) -> bool:
        if key in self._live or key in self._warm:
            return True
        if key in self._gone or not isinstance(key, str):
            return False
        return bool(self._db.read(f"SELECT 1 FROM {self.table} WHERE id = ?", (key,)))  # noqa: S608

    def __iter__(self) -> Iterator[str]:
        self.flush()
        return iter(
            [row[0] for row in self._db.read(f"SELECT id FROM {self.table} ORDER BY {self.order}")]  # noqa: S608
        )

    def __len__(self) -> int:
        self.flush()
        return self._db.read(f"SELECT count(*) FROM {self.table}")[0][0]  # noqa: S608

    def values(self) -> list[T]:  # type: ignore[override]
        """Every object, in creation order (tests and small tables only)."""
        return [self[key] for key in self]

    def items(self) -> list[tuple[str, T]]:  # type: ignore[override]
        return [(key, self[key]) for key in self]

    # -- write-back -----------------------------------------------------------------------

    def flush(self) -> None:
        """Write every change made to live objects since they were read, and the staged
        column of objects that are not live."""
        if self._live or self._gone:
            self._flush_live()
        if self._staged:
            for key, value in self._staged.items():
                if key not in self._live:
                    self._db.write(
                        f"UPDATE {self.table} SET {self.staged_column} = ? WHERE id = ?",  # noqa: S608
                        (value, key),
                    )
                    self._warm.pop(key, None)
            self._staged.clear()

    def _flush_live(self) -> None:
        for key in self._gone:
            if self._read.get(key) is not None:
                self._delete(key)
            self._read[key] = None
            self._warm.pop(key, None)
        self._gone.clear()
        for key, obj in self._live.items():
            row = self._row(key, obj)
            was = self._read.get(key)
            if row != was:
                self._write(key, obj, row, was)
                self._read[key] = row

    def release(self) -> None:
        """After a ``flush`` that succeeded: keep the live objects warm, as the rows hold them."""
        self._staged.clear()
        if not self._live and not self._read:
            return
        for key, obj in self._live.items():
            row = self._read.get(key)
            if row is not None:
                self._warm[key] = (obj, row)
                self._warm.move_to_end(key, last=False)
        while len(self._warm) > WARM_OBJECTS:
            self._warm.popitem()
        self._live.clear()
        self._read.clear()
        self._gone.clear()

    def forget(self) -> None:
        """After a failed write or a rollback: drop every object, live or warm."""
        self._staged.clear()
        self._live.clear()
        self._read.clear()
        self._gone.clear()
        self._warm.clear()

    def _rewarm(self, key: str) -> T | None:
        cached = self._warm.pop(key, None)
        if cached is None:
            return None
        obj, row = cached
        self._live[key] = obj
        self._read[key] = row
        return obj

    # -- per table --------------------------------------------------------------------------

    def _load(self, key: str) -> T | None:
        found = self._db.read(f"SELECT data FROM {self.table} WHERE id = ?", (key,))  # noqa: S608
        if not found:
            self._read[key] = None
            return None
        obj = self._decoder.decode(found[0][0])
        self._live[key] = obj
        self._read[key] = self._row(key, obj)
        return obj

    def _row(self, key: str, obj: T) -> Any:
        return self._encoder.encode(obj)

    def _write(self, key: str, obj: T, row: Any, was: Any) -> None:
        self._db.write(
            f"INSERT INTO {self.table}(id, data) VALUES (?, ?) "  # noqa: S608
            "ON CONFLICT(id) DO UPDATE SET data = excluded.data",
            (key, row),
        )

    def _delete(self, key: str) -> None:
        self._db.write(f"DELETE FROM {self.table} WHERE id = ?", (key,))  # noqa: S608


class _PromiseRow(msgspec.Struct, frozen=True):
    """What a promise row held when read: enough to write back only the index rows that moved."""

    data: bytes
    state: str
    timer_at: int | None
    awaiters: frozenset[str]


class PromiseRows(_Rows[DurablePromise]):
    """Promises, with their tag and awaiter index rows and their timeout timer."""

    table = "promises"
    kind = DurablePromise
    order = "seq"
    staged_column = "timer_at"

    def set_timer(self, promise_id: str, at: int | None) -> None:
        """Arm (or, with ``None``, disarm) the tick's timeout of a promise."""
        self._staged[promise_id] = at

    def due(self, now: int) -> list[tuple[str, int]]:
        """Armed timers at or before ``now``, in the order they were armed (creation order)."""
        self.flush()
        return [
            (row[0], row[1])
            for row in self._db.read(
                "SELECT id, timer_at FROM promises WHERE timer_at IS NOT NULL AND timer_at <= ? "
                "ORDER BY seq",
                (now,),
            )
        ]

    def timers(self) -> list[tuple[str, int]]:
        self.flush()
        return [
            (row[0], row[1])
            for row in self._db.read(
                "SELECT id, timer_at FROM promises WHERE timer_at IS NOT NULL ORDER BY seq"
            )
        ]

    def awaited_by(self, task_id: str) -> list[str]:
        """The promises ``task_id`` is an awaiter of."""
        self.flush()
        return [
            row[0]
            for row in self._db.read(
                "SELECT promise_id FROM awaiters WHERE task_id = ? ORDER BY promise_id", (task_id,)
            )
        ]

    def with_tag(self, key: str, value: str) -> list[str]:
        """Ids of the promises tagged ``key=value``, in creation order."""
        self.flush()
        return [
            row[0]
            for row in self._db.read(
                "SELECT p.id FROM promise_tags t CROSS JOIN promises p ON p.id = t.id "
                "WHERE t.key = ? AND t.value = ? ORDER BY p.seq",
                (key, value),
            )
        ]

    def search(self, query: Search) -> list[DurablePromise]:
        """Up to ``query.limit`` matches in id order. Tags of ``UNINDEXED_TAGS`` are matched on
        the decoded promises, page by page, behind the indexed part of the query."""
        self.flush()
        loose = {k: v for k, v in query.tags.items() if k in UNINDEXED_TAGS}
        if not loose:
            return self._search_indexed(query)
        strict = msgspec.structs.replace(
            query, tags={k: v for k, v in query.tags.items() if k not in loose}
        )
        found: list[DurablePromise] = []
        while len(found) < query.limit:
            page = self._search_indexed(strict)
            found += [p for p in page if all(p.tags.get(k) == v for k, v in loose.items())]
            if len(page) < strict.limit:
                break
            strict = msgspec.structs.replace(strict, cursor=page[-1].id)
        return found[: query.limit]

    def _search_indexed(self, query: Search) -> list[DurablePromise]:
        """The walk of the narrowest index: the id (for an exact id or a glob with a literal
        prefix), the rarest tag, or the pending promises."""
        where: list[str] = []
        args: list[Any] = []
        tags = list(query.tags.items())
        driver = self._driver(query, tags)
        if isinstance(driver, tuple):
            source, ident = "promise_tags t CROSS JOIN promises p ON p.id = t.id", "t.id"
            where.append("t.key = ? AND t.value = ?")
            args += driver
        elif driver == PENDING:
            source, ident = "promises p INDEXED BY promises_pending", "p.id"
        else:
            source, ident = "promises p", "p.id"
        for clause, arg in (
            (f"{ident} = ?", query.exact_id),
            (f"{ident} GLOB ?", query.glob),
            (f"{ident} > ?", query.cursor),
            ("p.state = ?", query.state if query.state != "pending" else None),
        ):
            if arg is not None:
                where.append(clause)
                args.append(arg)
        if query.state == "pending":
            where.append("p.state = 'pending'")  # a literal, so promises_pending applies
        for key, value in tags:
            if (key, value) != driver:
                where.append(
                    "EXISTS (SELECT 1 FROM promise_tags x WHERE x.key = ? AND x.value = ? "
                    "AND x.id = p.id)"
                )
                args += [key, value]
        condition = " AND ".join(where) or "1"
        sql = f"SELECT p.data FROM {source} WHERE {condition} ORDER BY {ident} LIMIT ?"  # noqa: S608
        return [self._decoder.decode(row[0]) for row in self._db.read(sql, (*args, query.limit))]

    def _driver(self, query: Search, tags: list[tuple[str, str]]) -> tuple[str, str] | str:
        """What a search walks: ``ID``, ``PENDING`` or a tag, whichever is smallest."""
        if query.exact_id is not None or (query.glob is not None and query.glob[:1] != "*"):
            return ID
        candidates: list[tuple[int, tuple[str, str] | str]] = [
            (self._count("SELECT 1 FROM promise_tags WHERE key = ? AND value = ?", tag), tag)
            for tag in tags
        ]
        if query.state == "pending":
            pending = "SELECT 1 FROM promises INDEXED BY promises_pending WHERE state = 'pending'"
            candidates.append((self._count(pending, ()), PENDING))
        return min(candidates, key=lambda c: c[0])[1] if candidates else ID

    def _count(self, select: str, args: tuple[str, ...]) -> int:
        """Rows ``select`` yields, counted up to ``SEARCH_COUNT_CAP``: a cheap, bounded estimate."""
        sql = f"SELECT count(*) FROM ({select} LIMIT ?)"  # noqa: S608
        return self._db.read(sql, (*args, SEARCH_COUNT_CAP))[0][0]

    def settled_roots(self, settled_by: int) -> list[str]:
        """Lineage roots settled at or before ``settled_by``."""
        self.flush()
        return [
            row[0]
            for row in self._db.read(
                "SELECT id FROM promises WHERE instr(id, ':') = 0 AND settled_at <= ? ORDER BY seq",
                (settled_by,),
            )
        ]

    def purge(self, origins: list[str]) -> list[str]:
        """Delete every promise of these lineages with its index rows; return their ids."""
        self.flush()
        removed: list[str] = []
        for origin in origins:
            lineage = (origin, origin + ORIGIN_SEP, origin + LINEAGE_END)
            rows = self._db.read(f"SELECT id, data FROM promises WHERE {IN_LINEAGE}", lineage)  # noqa: S608
            for promise_id, data in rows:
                p = self._decoder.decode(data)
                self._db.write_many(
                    "DELETE FROM promise_tags WHERE key = ? AND value = ? AND id = ?",
                    [(k, v, promise_id) for k, v in p.tags.items()],
                )
                self._db.write_many(
                    "DELETE FROM awaiters WHERE task_id = ? AND promise_id = ?",
                    [(task_id, promise_id) for task_id in p.awaiters],
                )
                self._db.write("DELETE FROM awaiters WHERE task_id = ?", (promise_id,))
                removed.append(promise_id)
            self._db.write(f"DELETE FROM promises WHERE {IN_LINEAGE}", lineage)  # noqa: S608
        for promise_id in removed:
            self._live.pop(promise_id, None)
            self._read.pop(promise_id, None)
            self._warm.pop(promise_id, None)
        return removed

    def _row(self, key: str, obj: DurablePromise) -> _PromiseRow:
        was = self._read.get(key)
        timer_at = self._staged.get(key, was.timer_at if was is not None else None)
        return _PromiseRow(
            data=self._encoder.encode(obj),
            state=obj.state,
            timer_at=timer_at,
            awaiters=frozenset(obj.awaiters),
        )

    def _load(self, key: str) -> DurablePromise | None:
        found = self._db.read("SELECT data, timer_at FROM promises WHERE id = ?", (key,))
        if not found:
            self._read[key] = None
            return None
        data, timer_at = found[0]
        obj = self._decoder.decode(data)
        self._live[key] = obj
        self._read[key] = _PromiseRow(
            data=data, state=obj.state, timer_at=timer_at, awaiters=frozenset(obj.awaiters)
        )
        return obj

    def _write(
        self, key: str, obj: DurablePromise, row: _PromiseRow, was: _PromiseRow | None
    ) -> None:
        if was is None:
            self._db.write(
                "INSERT INTO promises(id, state, timer_at, settled_at, data) "
                "VALUES (?, ?, ?, ?, ?)",
                (key, obj.state, row.timer_at, obj.settled_at, row.data),
            )
            self._db.write_many(
                "INSERT OR REPLACE INTO promise_tags(key, value, id) VALUES (?, ?, ?)",
                [(k, v, key) for k, v in obj.tags.items() if k not in UNINDEXED_TAGS],
            )
        else:
            changed = {"data": row.data}
            if row.state != was.state:
                changed["state"] = row.state
                changed["settled_at"] = obj.settled_at
            if row.timer_at != was.timer_at:
                changed["timer_at"] = row.timer_at
            assignments = ", ".join(f"{column} = ?" for column in changed)
            self._db.write(
                f"UPDATE promises SET {assignments} WHERE id = ?",  # noqa: S608
                (*changed.values(), key),
            )
        before = was.awaiters if was is not None else frozenset()
        if row.awaiters != before:
            self._db.write_many(
                "DELETE FROM awaiters WHERE task_id = ? AND promise_id = ?",
                [(task_id, key) for task_id in before - row.awaiters],
            )
            self._db.write_many(
                "INSERT OR IGNORE INTO awaiters(task_id, promise_id) VALUES (?, ?)",
                [(task_id, key) for task_id in row.awaiters - before],
            )


class TaskRows(_Rows[Task]):
    """Tasks; ``active`` finds the ones a start must re-arm a timer for."""

    table = "tasks"
    kind = Task
    staged_column = "sleeps"

    def set_sleeping(self, task_id: str, sleeps: bool) -> None:
        """Mark a pending task as a durable sleep's (no timer needed) or not."""
        self._staged[task_id] = int(sleeps)

    def active(self) -> list[Task]:
        """Acquired tasks and pending ones that do not sleep, in id order."""
        self.flush()
        return [
            self[row[0]]
            for row in self._db.read(
                "SELECT id FROM tasks INDEXED BY tasks_live WHERE state = 'acquired' OR "
                "(state = 'pending' AND sleeps = 0) ORDER BY id"
            )
        ]

    def purge(self, task_ids: list[str]) -> None:
        self.flush()
        self._db.write_many("DELETE FROM tasks WHERE id = ?", [(i,) for i in task_ids])
        for task_id in task_ids:
            self._live.pop(task_id, None)
            self._read.pop(task_id, None)
            self._warm.pop(task_id, None)

    def _row(self, key: str, obj: Task) -> tuple[bytes, str, bool]:
        was = self._read.get(key)
        sleeps = bool(self._staged.get(key, was[2] if was is not None else False))
        return self._encoder.encode(obj), obj.state, sleeps

    def _load(self, key: str) -> Task | None:
        found = self._db.read("SELECT data, sleeps FROM tasks WHERE id = ?", (key,))
        if not found:
            self._read[key] = None
            return None
        data, sleeps = found[0]
        obj = self._decoder.decode(data)
        self._live[key] = obj
        self._read[key] = (data, obj.state, bool(sleeps))
        return obj

    def _write(self, key: str, obj: Task, row: tuple[bytes, str, bool], was: Any) -> None:
        self._db.write(
            "INSERT INTO tasks(id, state, sleeps, data) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET state = excluded.state, sleeps = excluded.sleeps, "
            "data = excluded.data",
            (key, row[1], int(row[2]), row[0]),
        )


class ScheduleRows(_Rows[ScheduleStub]):
    table = "schedules"
    kind = ScheduleStub
