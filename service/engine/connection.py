"""``EngineConnection``: the SDK's ``Network`` and ``Source`` over the engine's rows.

A request is decoded, applied to ``IndexedState`` on the event loop (no await in between, so
requests are atomic without a lock), which writes what it changed into the open transaction; the
request is answered once that transaction is committed: **group commit**, one commit per
event-loop pass for every request that arrived in it, on the loop thread (``bench/README.md``
has the numbers that chose this over a writer thread). Reads and pushed messages wait for the
batch too, so nothing reported to anyone can be lost by a crash. If a write or the commit fails
(disk full, I/O error) every request in the batch gets ``EngineUnavailable`` and the transaction
is rolled back before anything else is answered.

It deliberately is *not* a ``LocalConnection``: ``Resonate`` gives that class a no-op heartbeat,
and then a step longer than the lease is re-run forever. With this class ``Resonate`` heartbeats
as it does against a server; heartbeats renew leases in memory only and are never written.

Pushed messages go through ``routing.Router`` to the embedded process (``recv``) and to the SSE
streams of ``service.engine.http``, addressed exactly as a Resonate Server addresses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

import msgspec
from resonate.error import DecodingError
from resonate.timing import Clock, Sleeper, now_ms, sleep

from service.engine import routing
from service.engine.errors import EngineError, EngineUnavailable
from service.engine.state import (
    IndexedState,
    OutgoingMessage,
    error_response,
    unwrap_request_envelope,
    wrap_response_envelope,
)
from service.engine.store import MemoryStore, SqliteStore, Store

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

logger = logging.getLogger(__name__)

TICK_INTERVAL_S_DEFAULT = 1.0
RETENTION_MS_DEFAULT = 30 * 86_400 * 1000
RETENTION_CHECK_S_DEFAULT = 60.0


class EngineConnection:
    """Network + Source over one engine state; see the module docstring."""

    def __init__(
        self,
        store: Store,
        *,
        pid: str,
        group: str,
        clock: Clock = now_ms,
        sleeper: Sleeper = sleep,
        tick_interval_s: float = TICK_INTERVAL_S_DEFAULT,
        retention_ms: int | None = None,
        retention_check_s: float = RETENTION_CHECK_S_DEFAULT,
    ) -> None:
        self._store = store
        self._pid = pid
        self._group = group
        self._clock = clock
        self._sleeper = sleeper
        self._tick_interval_s = tick_interval_s
        self._retention_ms = retention_ms
        self._retention_check_s = retention_check_s
        self._state = IndexedState()
        self._router = routing.Router()
        self._callbacks: list[Callable[[str], None]] = []
        self._local: routing.Listener | None = None
        self._batch_outgoing: list[OutgoingMessage] = []
        self._batch_done: asyncio.Future[None] | None = None
        self._broken: Exception | None = None
        self._started = False
        self._stopped = False
        self._tick_task: asyncio.Task[None] | None = None
        self._closed = asyncio.Event()

    # -- Source ---------------------------------------------------------------------------

    def unicast(self) -> str:
        return routing.unicast(self._group, self._pid)

    def resolve_target(self, target: str) -> str:
        return routing.anycast(target)

    def recv(self, callback: Callable[[str], None]) -> None:
        self._callbacks.append(callback)
        if self._local is None:
            self._local = routing.Listener(self._group, self._pid, self._deliver_local)
            self.attach(self._local)

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Open the store (lock, check, convert an old data dir) and start the tick loop.

        Idempotent. Leases held by this data dir's previous embedded process (and by this pid)
        are released now, so their tasks run again now instead of after the lease; pending
        tasks are re-sent to every listener attached now or later.
        """
        if self._started:
            return
        opened = self._store.open()
        state = opened.state
        try:
            now = self._clock()
            releases = state.restore_timers(now, set(opened.dead_pids) | {self._pid})
            outgoing: list[OutgoingMessage] = []
            for task_id, version in releases:
                state.apply(now, {"kind": "task.release", "id": task_id, "version": version})
                outgoing += state.outgoing
                state.outgoing = []
            self._store.claim(self._pid)
            state.db.commit()
        except BaseException:
            with contextlib.suppress(EngineUnavailable):
                state.db.rollback()
            self._store.close()
            raise
        self._state = state
        self._started = True
        if releases:
            logger.info("engine: released %d lease(s) held by a previous run", len(releases))
        self._route(outgoing)
        for listener in self._router.listeners():
            self._redeliver(listener)
        self._tick_task = asyncio.create_task(self._tick_loop())

    async def stop(self) -> None:
        """Commit what is staged, close the store, release the data dir. Idempotent."""
        if not self._started or self._stopped:
            return
        self._stopped = True
        task = self._tick_task
        self._tick_task = None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._batch_done is not None:
            self._flush()
        self._store.close()
        self._closed.set()
        self._callbacks.clear()

    @property
    def closed(self) -> asyncio.Event:
        """Set once ``stop`` has run: SSE streams end on it."""
        return self._closed

    # -- Network ----------------------------------------------------------------------------

    async def send(self, req: str, headers: dict[str, str] | None = None) -> str:
        """Apply one request; answer once what it reports is committed.

        ``headers`` (the lineage origin) are unused: one undivided state serves every origin.
        """
        if self._stopped:
            raise EngineUnavailable(RuntimeError("the engine is stopped"))
        if not self._started:
            await self._start_for_request()
        if self._broken is not None:
            self._recover()
        try:
            decoded = msgspec.json.decode(req)
        except msgspec.DecodeError as exc:
            msg = f"invalid JSON request: {exc}"
            raise DecodingError(msg) from exc
        flat = unwrap_request_envelope(decoded)
        response = self._apply(self._clock(), flat)
        if self._batch_done is not None:
            await asyncio.shield(self._batch_done)
        return msgspec.json.encode(wrap_response_envelope(response)).decode()

    async def _start_for_request(self) -> None:
        """``Resonate`` starts its connections in background tasks, so its first request can
        arrive before ``start`` ran: start here, and report failure as a connector error."""
        try:
            await self.start()
        except EngineError as exc:
            raise EngineUnavailable(exc) from exc

    # -- listeners (the embedded process and SSE streams) -----------------------------------

    def attach(self, listener: routing.Listener) -> None:
        """Add a receiver of pushed messages and hand it the work waiting for its group."""
        self._router.attach(listener)
        if self._started and not self._stopped:
            self._redeliver(listener)

    def detach(self, listener: routing.Listener) -> None:
        self._router.detach(listener)

    # -- internals --------------------------------------------------------------------------

    def _apply(self, now: int, flat: Any) -> dict[str, Any]:
        state = self._state
        try:
            response = state.apply(now, flat)
        except EngineUnavailable as exc:
            self._fail(exc)
            raise
        except Exception as exc:  # answered as the server would: an error status
            kind = flat.get("kind") if isinstance(flat, dict) else None
            corr_id = flat.get("corrId") if isinstance(flat, dict) else None
            response = error_response(kind, corr_id, exc)
        outgoing = state.outgoing
        state.outgoing = []
        self._stage(outgoing)
        return response

    def _stage(self, outgoing: list[OutgoingMessage]) -> None:
        """Hold ``outgoing`` until what was written is committed (send now if nothing was)."""
        if not self._state.db.dirty:
            self._push(outgoing)
            return
        if not self._store.durable:
            self._state.db.commit()
            self._route(outgoing)
            return
        self._batch_outgoing.extend(outgoing)
        if self._batch_done is None:
            self._batch_done = asyncio.get_running_loop().create_future()
            self._batch_done.add_done_callback(_retrieve)
            asyncio.get_running_loop().call_soon(self._flush)

    def _push(self, outgoing: list[OutgoingMessage]) -> None:
        """Send messages now, or after the staged batch commits if one is open."""
        if self._batch_done is not None:
            self._batch_outgoing.extend(outgoing)
        else:
            self._route(outgoing)

    def _flush(self) -> None:
        done = self._batch_done
        if done is None:
            return
        try:
            self._state.db.commit()
        except EngineUnavailable as exc:
            self._fail(exc)
            return
        outgoing = self._batch_outgoing
        self._batch_outgoing, self._batch_done = [], None
        done.set_result(None)
        self._route(outgoing)

    def _fail(self, failure: EngineUnavailable) -> None:
        """Fail every request of the open batch and roll back what they wrote."""
        logger.error("engine: write failed, rolling back to what is on disk: %s", failure)
        done = self._batch_done
        self._batch_outgoing, self._batch_done = [], None
        if done is not None:
            done.set_exception(failure)
        self._broken = failure
        with contextlib.suppress(EngineUnavailable):
            self._recover()

    def _recover(self) -> None:
        """Roll back the open transaction and forget what was read (after a failed write)."""
        self._state.db.rollback()
        self._state.forget(self._clock())
        self._broken = None
        for listener in self._router.listeners():
            self._redeliver(listener)

    def _route(self, outgoing: list[OutgoingMessage]) -> None:
        for message in outgoing:
            payload = msgspec.json.encode(message.message).decode()
            self._router.route(message.address, payload)

    def _redeliver(self, listener: routing.Listener) -> None:
        for address, task_id, version in self._state.deliverable(self._clock()):
            parsed = routing.parse(address)
            if parsed is not None and listener.reached_by(parsed):
                message = {"kind": "execute", "data": {"task": {"id": task_id, "version": version}}}
                listener.deliver(msgspec.json.encode(message).decode())

    def _deliver_local(self, payload: str) -> None:
        loop = asyncio.get_running_loop()
        for callback in list(self._callbacks):
            loop.call_soon(callback, payload)

    async def _tick_loop(self) -> None:
        since_retention = 0.0
        while True:
            await self._sleeper(self._tick_interval_s)
            since_retention += self._tick_interval_s
            expire = self._retention_ms is not None and since_retention >= self._retention_check_s
            if expire:
                since_retention = 0.0
            try:
                self._tick(expire=expire)
            except Exception:  # a timer bug must not stop every later timer
                logger.exception("engine: tick failed")

    def _tick(self, *, expire: bool) -> None:
        if self._broken is not None:
            with contextlib.suppress(EngineUnavailable):
                self._recover()
            return
        now = self._clock()
        try:
            self._state.tick(now)
            outgoing = self._state.outgoing
            self._state.outgoing = []
            self._stage(outgoing)
            if expire:
                self._expire(now)
        except EngineUnavailable as exc:
            self._fail(exc)

    def _expire(self, now: int) -> None:
        assert self._retention_ms is not None
        roots = self._state.expired_roots(now, self._retention_ms)
        if roots:
            removed = self._state.purge(roots)
            self._stage([])
            logger.info(
                "engine: retention removed %d workflow(s), %d promise(s)", len(roots), removed
            )


def _retrieve(future: asyncio.Future[None]) -> None:
    """Mark a batch's failure as seen: every waiter already got it as its own exception."""
    if not future.cancelled():
        future.exception()


def open_memory(
    *,
    pid: str,
    group: str,
    clock: Clock = now_ms,
    retention_ms: int | None = None,
    tick_interval_s: float = TICK_INTERVAL_S_DEFAULT,
) -> EngineConnection:
    """An engine that keeps everything in memory (tests, throwaway runs)."""
    return EngineConnection(
        MemoryStore(),
        pid=pid,
        group=group,
        clock=clock,
        retention_ms=retention_ms,
        tick_interval_s=tick_interval_s,
    )


def open_durable(
    data_dir: Path,
    *,
    pid: str,
    group: str,
    synchronous: str = "FULL",
    retention_ms: int = RETENTION_MS_DEFAULT,
    clock: Clock = now_ms,
    tick_interval_s: float = TICK_INTERVAL_S_DEFAULT,
) -> EngineConnection:
    """An engine kept in ``data_dir/engine.sqlite3``; opens nothing until ``start()``.

    ``pid`` must be the pid of the ``Resonate`` using this connection: leases taken under it are
    released at the next start (that process is gone), instead of waiting out their term.

    ``synchronous`` is SQLite's: ``FULL`` (default) fsyncs every commit, so an answered request
    survives power loss; ``NORMAL`` survives a process crash but may lose the last commits on
    power loss. ``retention_ms``: finished workflows older than this are deleted.
    """
    return EngineConnection(
        SqliteStore(data_dir, synchronous=synchronous),
        pid=pid,
        group=group,
        clock=clock,
        retention_ms=retention_ms,
        tick_interval_s=tick_interval_s,
    )
