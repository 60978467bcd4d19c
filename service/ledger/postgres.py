"""The ledger's index on Postgres, in tables of Mailgate's own beside resonate-pg's schema.

resonate-pg answers ``promise.search`` with 501, so the trail, notes and once-only markers that
``PromiseIndex`` keeps as tagged promises live here in the ``mailgate`` schema of the same
database: ``events`` (the trail, one row per event), ``requests`` (each request's newest event,
written in the same transaction as that event, so a listing reads one row per request and a
page costs one query), ``notes`` and ``claims``. The contract tests run the same suite against
both indexes (``tests/ledger/test_index_contract.py``).

Round decisions stay promises of the SDK (settled through its public API on every engine); only
finding them needs resonate-pg's ``promises`` table, read here and never written, except by
retention (``purge``), because resonate-pg never deletes anything itself.

Schema changes are numbered files in ``schema/``, applied in order by ``migrate`` and recorded
in ``mailgate.migrations``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets as pysecrets
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol

import psycopg
from psycopg import sql
from resonate.resonate import Resonate
from resonate.types import PromiseRecord

from service.domain import WORKFLOW_PREFIX
from service.engine.errors import EngineUnavailable
from service.engine.postgres import PATIENT, patient
from service.ledger.audit import Event
from service.ledger.index import Chain, HeadQuery, Note, approvers_of, get_promise, pair_of
from service.status import FINISHED_STATES

logger = logging.getLogger(__name__)

#: One batch of the retention job; each is one short transaction.
PURGE_BATCH = 100
#: How often a worker looks for requests past retention.
PURGE_INTERVAL_S = 60.0
MIGRATIONS_LOCK = "mailgate.migrations"


class Sessions(Protocol):
    def session(self) -> AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]: ...


class PostgresIndex:
    """``Index`` over Mailgate's tables. ``on_query`` is told the name of every round trip,
    as the metered network is told every engine request."""

    def __init__(
        self,
        sessions: Sessions,
        resonate: Resonate,
        on_query: Callable[[str, bool], None] | None = None,
        patience_s: float = 60.0,
    ) -> None:
        self._sessions = sessions
        self._resonate = resonate
        self._on_query = on_query
        self._patience_s = patience_s

    async def chain(self, request_id: str) -> Chain:
        return await self._run(lambda: self._chain(request_id))

    async def _chain(self, request_id: str) -> Chain:
        self._count("index.chain")
        async with self._sessions.session() as conn:
            cursor = await conn.execute(
                "SELECT value FROM mailgate.events WHERE request_id = %s ORDER BY seq",
                (request_id,),
            )
            events = [Event.from_value(json.loads(value)) for (value,) in await cursor.fetchall()]
            cursor = await conn.execute(
                "SELECT detail, at FROM mailgate.notes WHERE request_id = %s", (request_id,)
            )
            note = await cursor.fetchone()
        return Chain(events, Note(note[0], note[1]) if note else None)

    async def put_event(self, event: Event, previous: Event | None) -> Event:
        return await self._run(lambda: self._put_event(event, previous))

    async def _put_event(self, event: Event, previous: Event | None) -> Event:
        """Insert unless the place is taken, read back what is there, and move the request's
        head to it; one transaction, so a listing never sees an event without its head."""
        self._count("index.put_event", audit=True)
        value = json.dumps(event.to_value())
        async with self._sessions.session() as conn:
            await conn.execute(
                "INSERT INTO mailgate.events (request_id, seq, value) VALUES (%s, %s, %s) "
                "ON CONFLICT DO NOTHING",
                (event.request_id, event.seq, value),
            )
            cursor = await conn.execute(
                "SELECT value FROM mailgate.events WHERE request_id = %s AND seq = %s",
                (event.request_id, event.seq),
            )
            row = await cursor.fetchone()
            assert row is not None
            stored = Event.from_value(json.loads(row[0]))
            head = stored.row
            approvers = approvers_of(head)
            moved = await conn.execute(
                "INSERT INTO mailgate.requests AS r "
                "(request_id, head_seq, head, state, open, approver, pair) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (request_id) DO UPDATE SET head_seq = excluded.head_seq, "
                "head = excluded.head, state = excluded.state, open = excluded.open, "
                "approver = excluded.approver, pair = excluded.pair "
                "WHERE r.head_seq < excluded.head_seq RETURNING 1",
                (
                    stored.request_id,
                    stored.seq,
                    row[0],
                    stored.state,
                    stored.state not in FINISHED_STATES,
                    approvers[0],
                    pair_of(head),
                ),
            )
            if await moved.fetchone() is not None:
                await conn.execute(
                    "DELETE FROM mailgate.request_approvers WHERE request_id = %s",
                    (stored.request_id,),
                )
                await conn.execute(
                    "INSERT INTO mailgate.request_approvers (request_id, approver) "
                    "SELECT %s, unnest(%s::text[]) ON CONFLICT DO NOTHING",
                    (stored.request_id, approvers),
                )
        return stored

    async def heads(
        self, query: HeadQuery, limit: int, cursor: str | None
    ) -> tuple[list[Event], str | None]:
        return await self._run(lambda: self._heads(query, limit, cursor))

    async def _heads(
        self, query: HeadQuery, limit: int, cursor: str | None
    ) -> tuple[list[Event], str | None]:
        """Newest events of the requests that match, in request id order; the cursor is the
        last id of the page, and None after the last page."""
        self._count("index.heads")
        where: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("state", query.state),
            ("open", query.open),
            ("pair", query.pair),
        ):
            if value is not None:
                where.append(f"{column} = %s")
                params.append(value)
        if query.approver is not None:
            where.append(
                "EXISTS (SELECT 1 FROM mailgate.request_approvers a "
                "WHERE a.request_id = r.request_id AND a.approver = %s)"
            )
            params.append(query.approver)
        if cursor:
            where.append("request_id > %s")
            params.append(cursor)
        query_text = "SELECT head FROM mailgate.requests r"
        if where:
            query_text += " WHERE " + " AND ".join(where)
        query_text += " ORDER BY request_id LIMIT %s"
        params.append(limit + 1)
        async with self._sessions.session() as conn:
            rows = await (await conn.execute(query_text, params)).fetchall()
        events = [Event.from_value(json.loads(head)) for (head,) in rows[:limit]]
        more = len(rows) > limit
        return events, events[-1].request_id if more and events else None

    async def claim(self, request_id: str, name: str, now: int) -> bool:
        return await self._run(lambda: self._claim(request_id, name, now))

    async def _claim(self, request_id: str, name: str, now: int) -> bool:
        self._count("index.claim")
        nonce = pysecrets.token_hex(8)
        async with self._sessions.session() as conn:
            await conn.execute(
                "INSERT INTO mailgate.claims (request_id, name, at, nonce) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (request_id, name, now, nonce),
            )
            cursor = await conn.execute(
                "SELECT nonce FROM mailgate.claims WHERE request_id = %s AND name = %s",
                (request_id, name),
            )
            row = await cursor.fetchone()
        return row is not None and row[0] == nonce

    async def put_note(self, request_id: str, detail: str, now: int) -> None:
        return await self._run(lambda: self._put_note(request_id, detail, now))

    async def _put_note(self, request_id: str, detail: str, now: int) -> None:
        """Only the newest note is ever read, so it replaces the one before."""
        self._count("index.put_note")
        async with self._sessions.session() as conn:
            await conn.execute(
                "INSERT INTO mailgate.notes AS n (request_id, detail, at) VALUES (%s, %s, %s) "
                "ON CONFLICT (request_id) DO UPDATE SET detail = excluded.detail, "
                "at = excluded.at WHERE n.at <= excluded.at",
                (request_id, detail, now),
            )

    async def rounds(self, request_id: str) -> list[PromiseRecord]:
        return await self._run(lambda: self._rounds(request_id))

    async def _rounds(self, request_id: str) -> list[PromiseRecord]:
        """The request's settled rounds, found in resonate-pg's table (read only) and read
        through the SDK like every other promise."""
        self._count("index.rounds")
        async with self._sessions.session() as conn:
            cursor = await conn.execute(
                "SELECT id FROM resonate.promises WHERE origin_id = %s AND id <> origin_id "
                "AND tags->>'resonate:external' = 'true' AND state <> 'pending' ORDER BY id",
                (request_id,),
            )
            ids = [promise_id for (promise_id,) in await cursor.fetchall()]
        found = [await get_promise(self._resonate, promise_id) for promise_id in ids]
        return [record for record in found if record is not None]

    async def purge(self, settled_before: int, batch: int = PURGE_BATCH) -> list[str]:
        """Delete up to ``batch`` requests whose workflow settled before ``settled_before``
        (epoch ms): Mailgate's rows of each (events, head, note, claims) and, in resonate-pg's
        schema, every promise of its workflow (the root, its steps, rounds and timers, found
        by their ``resonate:origin``) with what hangs off them (tasks, callbacks, listeners
        and task resumes go by their foreign keys; outbox messages for them are deleted
        here). A request still waiting is never touched. Returns the request ids removed."""
        self._count("index.purge")
        async with self._sessions.session() as conn:
            cursor = await conn.execute(
                "SELECT pg_try_advisory_xact_lock(hashtext('mailgate.purge'))"
            )
            locked = await cursor.fetchone()
            if not locked or not locked[0]:
                return []  # another worker is purging right now
            cursor = await conn.execute(
                "SELECT id FROM resonate.promises WHERE id = origin_id AND id LIKE %s "
                "AND state <> 'pending' AND settled_at < %s ORDER BY settled_at LIMIT %s",
                (WORKFLOW_PREFIX + "%", settled_before, batch),
            )
            roots = [root for (root,) in await cursor.fetchall()]
            if not roots:
                return []
            cursor = await conn.execute(
                "DELETE FROM resonate.promises WHERE origin_id = ANY(%s) OR id = ANY(%s) "
                "RETURNING id",
                (roots, roots),
            )
            gone = [promise_id for (promise_id,) in await cursor.fetchall()]
            await conn.execute(
                "DELETE FROM resonate.outbox WHERE task_id = ANY(%s) "
                "OR (kind = 'unblock' AND promise->>'id' = ANY(%s))",
                (gone, gone),
            )
            await conn.execute(
                "DELETE FROM resonate.task_resumes WHERE awaited_id = ANY(%s)", (gone,)
            )
            for table in ("events", "requests", "notes", "claims"):
                await conn.execute(
                    sql.SQL("DELETE FROM mailgate.{} WHERE request_id = ANY(%s)").format(
                        sql.Identifier(table)
                    ),
                    (roots,),
                )
        return roots

    async def _run[T](self, op: Callable[[], Awaitable[T]]) -> T:
        """Run one operation; in a worker's workflows (``PATIENT``) wait out an outage, else
        fail fast with ``EngineUnavailable`` (a ``ConnectorError``, as the SDK's calls do).
        Every operation here may run twice: each is one transaction that either re-reads
        what it wrote or writes nothing the second time."""
        if PATIENT.get():
            return await patient(op, self._patience_s)
        try:
            return await op()
        except psycopg.OperationalError as exc:
            raise EngineUnavailable(str(exc).strip().splitlines()[0]) from exc

    def _count(self, kind: str, audit: bool = False) -> None:
        if self._on_query is not None:
            self._on_query(kind, audit)


class Retention:
    """The retention job every worker runs: each ``interval_s``, requests whose workflow
    settled more than ``retention_ms`` ago are purged in batches (``PostgresIndex.purge``)
    until a batch comes back short. Workers purging at once take turns by an advisory lock;
    a failure (Postgres away) is logged and the next round tries again."""

    def __init__(
        self,
        index: PostgresIndex,
        *,
        retention_ms: int,
        clock: Callable[[], int],
        interval_s: float = PURGE_INTERVAL_S,
        sleeper: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._index = index
        self._retention_ms = retention_ms
        self._clock = clock
        self._interval_s = interval_s
        self._sleeper = sleeper
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run_once(self) -> int:
        """Purge everything past retention now; how many requests went."""
        removed = 0
        while True:
            gone = await self._index.purge(self._clock() - self._retention_ms)
            removed += len(gone)
            if len(gone) < PURGE_BATCH:
                break
        if removed:
            logger.info("retention removed %d finished request(s) from Postgres", removed)
        return removed

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except psycopg.Error as exc:
                logger.warning("retention: %s; trying again later", exc)
            await self._sleeper(self._interval_s)


# ── migrations ─────────────────────────────────────────────────────────────────────────


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The numbered files of ``schema/``, in order."""
    found = []
    for entry in resources.files("service.ledger").joinpath("schema").iterdir():
        if entry.name.endswith(".sql"):
            number, _, _ = entry.name.partition("_")
            found.append(Migration(int(number), entry.name, entry.read_text()))
    return sorted(found, key=lambda m: m.version)


async def applied(sessions: Sessions) -> list[int]:
    """The versions recorded as applied; empty when Mailgate's schema does not exist yet."""
    async with sessions.session() as conn:
        cursor = await conn.execute("SELECT to_regclass('mailgate.migrations') IS NOT NULL")
        row = await cursor.fetchone()
        if not row or not row[0]:
            return []
        cursor = await conn.execute("SELECT version FROM mailgate.migrations ORDER BY version")
        return [version for (version,) in await cursor.fetchall()]


async def migrate(sessions: Sessions) -> list[str]:
    """Apply every migration not yet recorded, in one transaction, under a lock that makes a
    second process starting at the same moment wait and then find nothing left to do. Returns
    the names of the files applied."""
    done: list[str] = []
    async with sessions.session() as conn:
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (MIGRATIONS_LOCK,))
        await conn.execute("CREATE SCHEMA IF NOT EXISTS mailgate")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS mailgate.migrations (version INT PRIMARY KEY, "
            "name TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        cursor = await conn.execute("SELECT version FROM mailgate.migrations")
        recorded = {version for (version,) in await cursor.fetchall()}
        for migration in migrations():
            if migration.version in recorded:
                continue
            await conn.execute(migration.sql.encode())
            await conn.execute(
                "INSERT INTO mailgate.migrations (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
            done.append(migration.name)
    return done


def pending(versions: Sequence[int]) -> list[str]:
    """The migrations not among ``versions``."""
    return [m.name for m in migrations() if m.version not in set(versions)]
