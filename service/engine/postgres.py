"""resonate-pg as the engine every role shares: one Postgres database, no engine process.

``resonate_pg.PostgresConnection`` is the SDK's connector (network and source in one): each
protocol request is a stored procedure of resonate-pg's schema, and pushed work is an outbox
drained on LISTEN/NOTIFY with a 250 ms tick behind it. Mailgate wraps three things around it,
because the connector as shipped does not survive a Postgres restart well:

- **Sessions.** Its own pool backs off exponentially between reconnection attempts (1, 2, 4, …
  seconds, for as long as five minutes) and hands out connections that died with the server, so
  requests waited up to a minute after Postgres was back. ``Sessions`` checks a connection
  before lending it and never waits more than ``RECONNECT_S`` between attempts; a request that
  finds no connection fails after ``POOL_TIMEOUT_S`` (readiness says so) instead of hanging.
- **Timers.** The connector calls ``resonate.process_timeouts()`` only until it first fails (a
  dropped connection is enough), then never again, so durable sleeps, round timeouts and lease
  expiries stopped for good after an outage. Workers run ``TimerDriver`` instead, which keeps
  calling it with a capped backoff; pg_cron (resonate.sql schedules it when present) may run
  beside it, the function is safe to call concurrently.
- **Releases.** When a workflow's step fails because Postgres went away, the SDK releases its
  task so another attempt starts at once; but that release fails too (Postgres is away), the
  SDK only logs it, and the task stays leased to this process until the lease runs out
  (``MAILGATE_LEASE_TTL``, a minute by default): that was most of the minute waiting requests
  took to resume. The same happens when Postgres commits a ``task.acquire`` and dies before
  answering. ``RetryingReleases`` repairs both, with a short capped backoff, until Postgres
  answers or the lease would have run out anyway.
- **Steps.** A workflow's step that reads or writes the ledger while Postgres is away would
  fail, and the SDK records any error of a step as the step's outcome: the request would end
  "failed" because of an outage. Calls made while a worker runs workflows (``PATIENT``, set
  by ``patiently``) wait Postgres out instead, for as long as their task's lease could hold:
  the idempotent ``promise.*`` requests here (a create answers with what is stored, a settle
  with the first settlement), the ledger's queries in ``service.ledger.postgres``. Everything
  else (the gateway's pages, readiness) still fails fast.
- **Schema.** ``resonate_schema`` says whether resonate.sql was applied and which version; Mailgate
  never ships or changes that file (it is resonate-pg's).

This module and ``remote.py`` are the only places that name SDK connection classes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool
from resonate_base.error import ConnectorError
from resonate_pg import PostgresConnection

from service.engine.errors import EngineError, EngineUnavailable

logger = logging.getLogger(__name__)

#: Longest pause between attempts to reach Postgres again after losing it.
RECONNECT_S = 2.0
#: How long one request waits for a connection before it fails.
POOL_TIMEOUT_S = 5.0
#: Connections per process; each is a backend process on the server, hence modest.
POOL_MAX = 16
#: How often a worker advances resonate-pg's timers, and its longest pause while they fail.
TIMER_INTERVAL_S = 1.0
TIMER_BACKOFF_MAX_S = 2.0

#: The resonate.sql this release is tested with: resonate-pg's repository at this commit. Users
#: apply that very file (checked by its sha256) to their database; Mailgate never ships it.
RESONATE_SQL_COMMIT = "54fe65150f42f39f415363d05cd54ff91a069b1c"
RESONATE_SQL_SHA256 = "f4cc2e6c646acee6a9b358d3dd1684997d223e52edc6e075f7d866035f37ae2e"
RESONATE_SQL_URL = (
    f"https://raw.githubusercontent.com/resonatehq/resonate-pg/{RESONATE_SQL_COMMIT}/resonate.sql"
)
#: What that file's ``resonate.get_schema_version()`` answers.
RESONATE_SCHEMA_VERSION = "0.1.0"

SCHEMA_VERSION_SQL = "SELECT resonate.get_schema_version()"
PROCESS_TIMEOUTS_SQL = "SELECT resonate.process_timeouts()"

Sleeper = Callable[[float], Awaitable[None]]
#: Requests that may be sent again after a lost answer: each answers with what is stored.
IDEMPOTENT = frozenset(
    {"promise.get", "promise.create", "promise.settle", "promise.register_listener"}
)
#: True in the tasks that run workflows (see the module docstring, "Steps").
PATIENT: ContextVar[bool] = ContextVar("mailgate_engine_patient", default=False)

#: The envelope's kind comes first in the SDK's encoding (see ``metered.py``).
_KIND = re.compile(r'"kind"\s*:\s*"([a-z._]+)"')


class Sessions:
    """Connections to Mailgate's Postgres, shared by the SDK's connector and the ledger's index
    (``resonate_pg.PgSessions``: ``session``, ``dedicated``, ``close``).

    Opening costs nothing: the pool connects on first use, so a role may start before its
    database and wait for it.
    """

    def __init__(self, url: str, *, max_size: int = POOL_MAX) -> None:
        self._url = url
        self._pool = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=max_size,
            open=False,
            timeout=POOL_TIMEOUT_S,
            reconnect_timeout=RECONNECT_S,
            check=AsyncConnectionPool.check_connection,
            name="mailgate",
        )
        self._opened = False
        self._lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
        """One connection for one unit of work: a transaction, committed when the block ends
        without an error, rolled back otherwise."""
        await self._open()
        async with self._pool.connection() as conn:
            yield conn

    async def dedicated(self) -> psycopg.AsyncConnection[Any]:
        """An autocommit connection of the caller's own, as ``LISTEN`` needs."""
        return await psycopg.AsyncConnection.connect(
            self._url, autocommit=True, connect_timeout=int(POOL_TIMEOUT_S)
        )

    async def close(self) -> None:
        if self._opened:
            await self._pool.close()

    async def _open(self) -> None:
        if self._opened:
            return
        async with self._lock:
            if not self._opened:
                await self._pool.open(wait=False)
                self._opened = True


class _Lent:
    """The sessions as the connector sees them: it closes its sessions when it stops, but the
    ledger's index may still be writing then (the SDK joins in-flight work after stopping its
    connections), so closing is left to the process that opened them."""

    def __init__(self, sessions: Sessions) -> None:
        self._sessions = sessions

    def session(self) -> contextlib.AbstractAsyncContextManager[psycopg.AsyncConnection[Any]]:
        return self._sessions.session()

    async def dedicated(self) -> psycopg.AsyncConnection[Any]:
        return await self._sessions.dedicated()

    async def close(self) -> None:
        return None


class TimerDriver:
    """Calls ``resonate.process_timeouts()`` every ``interval_s`` for as long as it runs; after
    a failure it tries again after a short, capped backoff, and says once that timers are
    stalled and once that they run again."""

    def __init__(
        self,
        sessions: Sessions,
        *,
        interval_s: float = TIMER_INTERVAL_S,
        backoff_max_s: float = TIMER_BACKOFF_MAX_S,
        sleeper: Sleeper = asyncio.sleep,
    ) -> None:
        self._sessions = sessions
        self._interval_s = interval_s
        self._backoff_max_s = backoff_max_s
        self._sleeper = sleeper
        self._task: asyncio.Task[None] | None = None
        self.fired = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        failing = False
        delay = self._interval_s
        while True:
            try:
                async with self._sessions.session() as conn:
                    cursor = await conn.execute(PROCESS_TIMEOUTS_SQL)
                    row = await cursor.fetchone()
            except Exception as exc:  # any failure to reach Postgres: try again soon
                if not failing:
                    logger.warning("postgres: timers stalled (%s); retrying", _first_line(exc))
                    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
                        logger.error(
                            "postgres: this role may not run resonate.process_timeouts(); grant "
                            "it EXECUTE, or schedule it with pg_cron (resonate.sql does when "
                            "pg_cron is installed)"
                        )
                failing = True
                delay = min(max(delay, 0.25) * 2, self._backoff_max_s)
            else:
                if failing:
                    logger.info("postgres: timers run again")
                failing = False
                delay = self._interval_s
                self.fired += int(row[0]) if row and row[0] else 0
            await self._sleeper(delay)


class RetryingReleases:
    """The connector as the SDK's ``Network``, except that two requests the transport failed
    to deliver are repaired in the background once Postgres answers again (see the module
    docstring), for as long as the lease they concern could still hold the task:

    - a ``task.release``: sent again. Twice is harmless: a task already released, or leased
      again since, answers 409.
    - a ``task.acquire``: Postgres may have committed it before the connection broke, leaving
      the task leased to this process, which gave up on it. It is released if, and only if,
      this process (its pid, the version the acquire made) still holds it, so a task another
      worker has acquired since is never touched.
    """

    def __init__(
        self,
        connection: PostgresConnection,
        sessions: Sessions,
        *,
        give_up_after_s: float,
        sleeper: Sleeper = asyncio.sleep,
    ) -> None:
        self._connection = connection
        self._sessions = sessions
        self._give_up_after_s = give_up_after_s
        self._sleeper = sleeper
        self._retries: set[asyncio.Task[None]] = set()
        self.repaired = 0

    async def start(self) -> None:
        await self._connection.start()

    async def stop(self) -> None:
        for task in list(self._retries):
            task.cancel()
        await asyncio.gather(*self._retries, return_exceptions=True)
        await self._connection.stop()

    async def send(self, req: str, headers: dict[str, str] | None = None) -> str:
        kind = _KIND.search(req, 0, 200)
        if PATIENT.get() and kind and kind.group(1) in IDEMPOTENT:
            return await patient(
                lambda: self._connection.send(req, headers), self._give_up_after_s, self._sleeper
            )
        try:
            return await self._connection.send(req, headers)
        except ConnectorError:
            if kind and kind.group(1) == "task.release":
                self._repair(lambda: self._connection.send(req, headers))
            elif kind and kind.group(1) == "task.acquire":
                data = json.loads(req)["data"]
                self._repair(lambda: self._release_if_held(data))
            raise

    def _repair(self, attempt: Callable[[], Awaitable[object]]) -> None:
        task = asyncio.create_task(self._until_done(attempt))
        self._retries.add(task)
        task.add_done_callback(self._retries.discard)

    async def _until_done(self, attempt: Callable[[], Awaitable[object]]) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._give_up_after_s
        delay = 0.25
        while loop.time() < deadline:
            await self._sleeper(delay)
            try:
                await attempt()
            except (ConnectorError, psycopg.OperationalError):
                delay = min(delay * 2, RECONNECT_S)
                continue
            self.repaired += 1
            logger.info("postgres: repaired a task request the outage had cut off")
            return

    async def _release_if_held(self, acquire: dict[str, Any]) -> None:
        async with self._sessions.session() as conn:
            await conn.execute(
                "SELECT resonate.task_release(id, version, "
                "(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM resonate.tasks "
                "WHERE id = %s AND pid = %s AND version = %s AND state = 'acquired'",
                (acquire["id"], acquire["pid"], int(acquire["version"]) + 1),
            )


async def patient[T](
    attempt: Callable[[], Awaitable[T]], give_up_after_s: float, sleeper: Sleeper = asyncio.sleep
) -> T:
    """``attempt()``, tried again while Postgres cannot be reached, up to ``give_up_after_s``;
    the last failure escapes then."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + give_up_after_s
    delay = 0.25
    while True:
        try:
            return await attempt()
        except (ConnectorError, psycopg.OperationalError):
            if loop.time() + delay > deadline:
                raise
        await sleeper(delay)
        delay = min(delay * 2, RECONNECT_S)


def patiently[T](start: Callable[[], T]) -> T:
    """Call ``start`` (a worker starting the SDK) so that the tasks it spawns, and the
    workflows they run, wait out an outage (``PATIENT``)."""
    token = PATIENT.set(True)
    try:
        return start()
    finally:
        PATIENT.reset(token)


@dataclass
class PostgresEngine:
    """What a role opens on a Postgres engine: the connector, its sessions, and (in a worker)
    the timer driver. ``start`` and ``stop`` cover what the SDK does not start itself."""

    connection: PostgresConnection
    network: RetryingReleases
    sessions: Sessions
    timers: TimerDriver | None

    async def start(self) -> None:
        if self.timers is not None:
            self.timers.start()

    async def stop(self) -> None:
        if self.timers is not None:
            await self.timers.stop()
        await self.network.stop()
        await self.sessions.close()


def open_postgres(
    url: str, *, pid: str, group: str, drive_timers: bool, lease_ttl_s: float = 60.0
) -> PostgresEngine:
    """The connector for ``group``; nothing connects until it is started and used. The SDK
    gets ``network`` to send through and ``connection`` as its source of pushed work."""
    sessions = Sessions(url)
    connection = PostgresConnection(
        pid=pid,
        group=group,
        sessions=_Lent(sessions),
        drive_timers=False,
        sleeper=_capped_sleep,
    )
    timers = TimerDriver(sessions) if drive_timers else None
    network = RetryingReleases(connection, sessions, give_up_after_s=lease_ttl_s)
    return PostgresEngine(connection, network, sessions, timers)


async def _capped_sleep(seconds: float) -> None:
    """The connector's LISTEN reconnect waits up to a minute; NOTIFY is what makes pushed work
    prompt, so it never waits longer than ``RECONNECT_S`` here."""
    await asyncio.sleep(min(seconds, RECONNECT_S))


@dataclass(frozen=True)
class Schema:
    """What ``resonate_schema`` found: resonate-pg's schema version, or None when it is missing."""

    version: str | None


class SchemaMissing(EngineError):
    """The database has no resonate-pg schema: someone must apply resonate.sql first."""

    def __init__(self) -> None:
        super().__init__(
            "the Postgres database has no resonate-pg schema (`mailgate db check` says what is "
            f"there); {how_to_apply()}"
        )


def how_to_apply() -> str:
    """The commands that apply the pinned resonate.sql, for messages and ``db check``."""
    return (
        f"apply resonate.sql of resonate-pg at commit {RESONATE_SQL_COMMIT}:\n"
        f"    curl -fsSL {RESONATE_SQL_URL} -o resonate.sql\n"
        f"    echo '{RESONATE_SQL_SHA256}  resonate.sql' | sha256sum -c -\n"
        '    psql "$MAILGATE_ENGINE" -v ON_ERROR_STOP=1 -f resonate.sql'
    )


async def resonate_schema(sessions: Sessions) -> Schema:
    """Whether resonate.sql was applied to the database. Raises ``EngineUnavailable`` when
    Postgres cannot be reached."""
    try:
        return await _inspect(sessions)
    except psycopg.OperationalError as exc:
        raise EngineUnavailable(_first_line(exc)) from exc


async def _inspect(sessions: Sessions) -> Schema:
    async with sessions.session() as conn:
        cursor = await conn.execute(
            "SELECT to_regprocedure('resonate.get_schema_version()') IS NOT NULL"
        )
        row = await cursor.fetchone()
        if not row or not row[0]:
            return Schema(None)
        cursor = await conn.execute(SCHEMA_VERSION_SQL)
        row = await cursor.fetchone()
    return Schema(str(row[0]) if row else None)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
