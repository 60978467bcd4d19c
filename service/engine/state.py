"""The SDK's own server state machine over SQLite rows, so its cost and memory stay flat as the
backlog grows.

``IndexedState`` *is* ``resonate.connections.local.ServerState`` (this module is the only one
that imports it): every protocol rule stays the SDK's. What changes is where the state lives and
how it is found. Promises, tasks and schedules are rows (``rows.py``): a request reads the ones
it touches and writes back the ones it changed, in the store's open transaction, so a process
holding 100,000 waiting approvals keeps none of them in memory and starts without loading them.
Stock ``ServerState`` scans every promise in ``preload`` and ``enqueue_settle`` and keeps its
timers in lists it scans on every set, delete and tick; here ``preload`` reads the
``resonate:branch`` tag index, ``enqueue_settle`` the awaiter index, promise timeouts are an
indexed column, and task timers (only pending and acquired tasks have one) a dict plus a heap.
Timers that fall due together still fire in the order stock ``ServerState`` fires them (first
insertion order), so responses and outgoing messages are identical —
``tests/engine/test_state_equivalence.py`` runs the same request sequences through both and
compares every response.

Additions the protocol needs and the SDK's in-process machine lacks: ``promise.search``
(the Resonate Server's semantics: exact state, tag subset, ids in ascending order, the last id
as cursor, plus an ``id`` pattern with ``*``) and purging finished lineages (retention).

Leases are volatile by design: heartbeats only move a timer in memory, and ``restore_timers``
re-arms every task timer when a store is opened or rolled back.
"""

from __future__ import annotations

import heapq
from typing import Any

from resonate.connections.local import (
    PENDING_RETRY_TTL,
    OutgoingMessage,
    PTimeout,
    ServerState,
    Task,
    TTimeout,
    unwrap_request_envelope,
    wrap_response_envelope,
)
from resonate.error import ServerError

from service.engine.rows import (
    Database,
    PromiseRows,
    ScheduleRows,
    Search,
    TaskRows,
    memory_database,
)

__all__ = [
    "PENDING_RETRY_TTL",
    "IndexedState",
    "OutgoingMessage",
    "unwrap_request_envelope",
    "wrap_response_envelope",
]

SEARCH_LIMIT_DEFAULT = 100
SEARCH_LIMIT_MAX = 1000
PROMISE_STATES = frozenset(
    {"pending", "resolved", "rejected", "rejected_canceled", "rejected_timedout"}
)
#: The SDK's tag on a durable sleep's promise (``ctx.sleep``).
TIMER_TAG = "resonate:timer"
BRANCH_TAG = "resonate:branch"
#: Stale heap entries tolerated per live timer before the heap is rebuilt.
HEAP_SLACK = 2
HEAP_SLACK_MIN = 1024


class _Timers:
    """Task timer table with ``ServerState``'s list semantics at heap cost.

    Stock ``ServerState`` keeps timers in a list: setting an existing id updates it in place,
    a new id is appended, and a tick fires due timers in list order. Each entry here keeps the
    sequence number of its first insertion, so due timers are handed out in that same order.
    A timer that is due but does not fire (its task moved on) stays due, as in the list, and is
    offered again on the next tick.
    """

    def __init__(self) -> None:
        self.entries: dict[str, list[int]] = {}  # id -> [timeout, seq, typ]
        self._heap: list[tuple[int, int, str]] = []
        self._overdue: set[str] = set()
        self._seq = 0

    def set(self, timer_id: str, timeout: int, typ: int = 0) -> None:
        entry = self.entries.get(timer_id)
        if entry is None:
            self._seq += 1
            entry = [timeout, self._seq, typ]
            self.entries[timer_id] = entry
        else:
            entry[0] = timeout
            entry[2] = typ
        heapq.heappush(self._heap, (timeout, entry[1], timer_id))
        if len(self._heap) > HEAP_SLACK * len(self.entries) + HEAP_SLACK_MIN:
            self._heap = [(e[0], e[1], i) for i, e in self.entries.items()]
            heapq.heapify(self._heap)

    def delete(self, timer_id: str) -> None:
        self.entries.pop(timer_id, None)
        self._overdue.discard(timer_id)

    def due(self, now: int) -> list[str]:
        """Ids whose timeout is ``<= now``, in first-insertion order."""
        ids = set(self._overdue)
        heap = self._heap
        while heap and heap[0][0] <= now:
            timeout, seq, timer_id = heapq.heappop(heap)
            entry = self.entries.get(timer_id)
            if entry is not None and entry[0] == timeout and entry[1] == seq:
                ids.add(timer_id)
        return sorted(ids, key=lambda i: self.entries[i][1])

    def settle_due(self, offered: list[str], now: int) -> None:
        """Remember which offered timers are still due after the tick ran."""
        self._overdue = {
            i for i in offered if (e := self.entries.get(i)) is not None and e[0] <= now
        }


class IndexedState(ServerState):
    """``ServerState`` over rows; see the module docstring for what and why."""

    def __init__(self, db: Database | None = None) -> None:
        super().__init__()
        self.db = db if db is not None else memory_database()
        self.promises: PromiseRows = PromiseRows(self.db)  # type: ignore[assignment]
        self.tasks: TaskRows = TaskRows(self.db)  # type: ignore[assignment]
        self.schedules: ScheduleRows = ScheduleRows(self.db)  # type: ignore[assignment]
        self._t_timers = _Timers()
        self._now = 0

    # -- request entry point ------------------------------------------------------------

    def apply(self, now: int, req: Any) -> dict[str, Any]:
        """Apply one request and write back what it changed (into the open transaction)."""
        kind = req.get("kind") if isinstance(req, dict) else None
        self._now = now
        try:
            if kind == "promise.search":
                self.outgoing.clear()
                return self.promise_search(req.get("corrId"), req)
            return super().apply(now, req)
        finally:
            self.write_back()

    def write_back(self) -> None:
        """Write every changed row and let go of the objects read (``EngineUnavailable`` if
        the write fails: the caller rolls back and calls ``forget``)."""
        tables = (self.promises, self.tasks, self.schedules)
        try:
            for rows in tables:
                rows.flush()
        except BaseException:
            for rows in tables:
                rows.forget()
            raise
        for rows in tables:
            rows.release()

    def forget(self, now: int) -> None:
        """After a rollback: drop every object read and re-arm the timers from the rows."""
        for rows in (self.promises, self.tasks, self.schedules):
            rows.forget()
        self.restore_timers(now, set())

    # -- ticks ----------------------------------------------------------------------------

    def tick(self, now: int) -> None:
        self._now = now
        p_due = self.promises.due(now)
        t_due = [self._t_entry(i) for i in self._t_timers.due(now)]
        try:
            self._run_stock_tick(now, p_due, t_due)
        finally:
            self.write_back()

    def replay_tick(self, now: int, released: list[tuple[str, int]]) -> None:
        """Re-apply a tick of an old journal: timeouts as they fall due, leases as recorded."""
        self._now = now
        p_due = self.promises.due(now)
        t_due = [self._t_entry(i) for i in self._t_timers.due(now)]
        t_offered = [t for t in t_due if t.typ == 0]
        t_offered += [TTimeout(id=i, typ=1, timeout=now) for i, _ in released]
        try:
            self._run_stock_tick(now, p_due, t_offered)
        finally:
            self.write_back()

    def _run_stock_tick(
        self, now: int, p_due: list[tuple[str, int]], t_due: list[TTimeout]
    ) -> None:
        self.p_timeouts = [PTimeout(id=i, timeout=at) for i, at in p_due]
        self.t_timeouts = t_due
        try:
            super().tick(now)
        finally:
            self.p_timeouts = []
            self.t_timeouts = []
            self._t_timers.settle_due([t.id for t in t_due if t.id in self._t_timers.entries], now)

    def _t_entry(self, timer_id: str) -> TTimeout:
        timeout, _, typ = self._t_timers.entries[timer_id]
        return TTimeout(id=timer_id, typ=typ, timeout=timeout)

    # -- timers: the stock list operations, on the indexed column and table ------------------

    def set_p_timeout(self, promise_id: str, timeout: int) -> None:
        self.promises.set_timer(promise_id, timeout)

    def del_p_timeout(self, promise_id: str) -> None:
        """Disarm a settled promise's timeout; a sleep's task it leaves pending retries again.

        Only a ``task.fulfill`` naming another task's promise settles a sleep without fulfilling
        its task (the SDK never sends one); stock ``ServerState`` would still be retrying it.
        """
        self.promises.set_timer(promise_id, None)
        t = self.tasks.get(promise_id)
        if t is not None and t.state == "pending" and promise_id not in self._t_timers.entries:
            self.tasks.set_sleeping(promise_id, False)
            self._t_timers.set(promise_id, 0, self._now + PENDING_RETRY_TTL)

    def set_t_timeout(self, task_id: str, typ: int, timeout: int) -> None:
        if typ == 0:
            sleeps = self._sleeping(task_id) is not None
            self.tasks.set_sleeping(task_id, sleeps)
            if sleeps:
                self._t_timers.delete(task_id)  # its promise's timeout ends it at the deadline
                return
        self._t_timers.set(task_id, timeout, typ)

    def del_t_timeout(self, task_id: str) -> None:
        self._t_timers.delete(task_id)

    # -- durable sleeps: their task is neither offered nor timed before the deadline ---------

    def send_execute_message(self, address: str, task_id: str, version: int) -> None:
        if self._sleeping(task_id) is None:
            super().send_execute_message(address, task_id, version)

    def _sleeping(self, task_id: str) -> int | None:
        """The deadline of the pending durable sleep (``ctx.sleep``) ``task_id`` belongs to."""
        p = self.promises.get(task_id)
        if p is None or p.state != "pending" or p.tags.get(TIMER_TAG) != "true":
            return None
        return p.timeout_at

    # -- the two scans of stock ServerState, indexed ----------------------------------------

    def preload(self, promise_id: str) -> list[dict[str, Any]]:
        p = self.promises.get(promise_id)
        if p is None:
            return []
        branch = p.tags.get(BRANCH_TAG)
        if branch is None:
            return []
        siblings = self.promises.with_tag(BRANCH_TAG, branch)
        return [self.promises[i].to_record() for i in siblings if i != promise_id]

    def enqueue_settle(self, promise_id: str) -> None:
        """Stock ``enqueue_settle``; the awaiter cleanup visits only promises the task awaits."""
        t = self.tasks.get(promise_id)
        if t is None:
            p = self.promises.get(promise_id)
            if p is not None and "resonate:target" in p.tags:
                self.tasks[promise_id] = Task(
                    id=promise_id, state="fulfilled", version=0, pid=None, ttl=None, resumes=set()
                )
            return
        if t.state == "fulfilled":
            return
        t.state = "fulfilled"
        t.pid = None
        t.ttl = None
        t.resumes.clear()
        self.del_t_timeout(promise_id)
        for awaited_id in self.promises.awaited_by(promise_id):
            awaited = self.promises.get(awaited_id)
            if awaited is not None:
                awaited.awaiters.discard(promise_id)

    # -- search -----------------------------------------------------------------------------

    def promise_search(self, corr_id: Any, req: Any) -> dict[str, Any]:
        """``promise.search`` as the Resonate Server answers it, plus an ``id`` glob."""
        try:
            query = parse_search(req)
        except ValueError as exc:
            return {"kind": "promise.search", "corrId": corr_id, "status": 400, "error": str(exc)}
        page = self.promises.search(query)
        more = len(page) > query.limit - 1
        page = page[: query.limit - 1]
        return {
            "kind": "promise.search",
            "corrId": corr_id,
            "status": 200,
            "promises": [p.to_record() for p in page],
            "cursor": page[-1].id if more and page else None,
        }

    # -- retention --------------------------------------------------------------------------

    def expired_roots(self, now: int, retention_ms: int) -> list[str]:
        """Roots settled at least ``retention_ms`` ago: their whole lineage may go."""
        return self.promises.settled_roots(now - retention_ms)

    def purge(self, roots: list[str]) -> int:
        """Forget every promise and task of these lineages; return how many promises went."""
        try:
            removed = self.promises.purge(roots)
            self.tasks.purge(removed)
        finally:
            self.write_back()
        for promise_id in removed:
            self._t_timers.delete(promise_id)
        return len(removed)

    # -- recovery ---------------------------------------------------------------------------

    def restore_timers(self, now: int, dead_pids: set[str]) -> list[tuple[str, int]]:
        """Re-arm every task timer from the rows; return the leases to release.

        Leases held by ``dead_pids`` (earlier incarnations of this process) are returned so the
        caller releases them. Any other lease gets a fresh full term, so a worker that outlived
        an engine restart keeps its task if it heartbeats in time. Pending tasks retry now;
        deferred ones keep their delay. Only acquired tasks and pending ones that do not sleep
        are read (a sleep's task needs no timer: its promise's timeout ends it).
        """
        self._t_timers = _Timers()
        to_release = []
        try:
            for task in self.tasks.active():
                if task.state == "acquired":
                    if task.pid in dead_pids:
                        to_release.append((task.id, task.version))
                    ttl = task.ttl if task.ttl is not None else PENDING_RETRY_TTL
                    self.set_t_timeout(task.id, 1, now + ttl)
                else:
                    self.set_t_timeout(task.id, 0, self._first_delivery(task.id, now))
        finally:
            self.write_back()
        return to_release

    def _first_delivery(self, task_id: str, now: int) -> int:
        wake = self._sleeping(task_id)
        if wake is not None:
            return max(now, wake)
        p = self.promises.get(task_id)
        try:
            delay = int(p.tags["resonate:delay"]) if p is not None else None
        except (KeyError, ValueError):
            delay = None
        return delay if delay is not None and now < delay else now

    def deliverable(self, now: int) -> list[tuple[str, str, int]]:
        """Pending tasks that may run now, as ``(address, task id, version)``."""
        ready = []
        try:
            for task in self.tasks.active():
                if task.state != "pending" or self._first_delivery(task.id, now) > now:
                    continue
                p = self.promises.get(task.id)
                address = p.tags.get("resonate:target") if p is not None else None
                if address is not None:
                    ready.append((address, task.id, task.version))
        finally:
            self.write_back()
        return ready


def parse_search(req: dict[str, Any]) -> Search:
    """A ``promise.search`` request as a ``Search`` asking for one extra row (is there more?)."""
    state = req.get("state")
    if state is not None and state not in PROMISE_STATES:
        raise ValueError(f"invalid 'state': {state!r}")
    tags = req.get("tags") or {}
    if not isinstance(tags, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
    ):
        raise ValueError("invalid 'tags': must map strings to strings")
    limit = req.get("limit", SEARCH_LIMIT_DEFAULT)
    if limit is None:
        limit = SEARCH_LIMIT_DEFAULT
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= 1000:
        raise ValueError(f"invalid 'limit' — must be between 1 and {SEARCH_LIMIT_MAX}")
    cursor = req.get("cursor")
    if cursor is not None and not isinstance(cursor, str):
        raise ValueError("invalid 'cursor'")
    id_pattern = req.get("id")
    glob = exact_id = None
    if id_pattern is not None:
        if not isinstance(id_pattern, str):
            raise ValueError("invalid 'id'")
        if "*" in id_pattern:
            glob = "*".join(_glob_literal(part) for part in id_pattern.split("*"))
        else:
            exact_id = id_pattern
    return Search(
        state=state, tags=tags, limit=limit + 1, cursor=cursor, glob=glob, exact_id=exact_id
    )


def _glob_literal(text: str) -> str:
    """``text`` matched literally by SQLite's GLOB (only ``*`` is a wildcard in an id pattern)."""
    return text.replace("[", "[[]").replace("?", "[?]")


def error_response(kind: Any, corr_id: Any, exc: Exception) -> dict[str, Any]:
    """The flat response for a request the state machine refused or failed on."""
    status = exc.code if isinstance(exc, ServerError) else 500
    message = exc.message if isinstance(exc, ServerError) else f"internal error: {exc}"
    return {"kind": kind, "corrId": corr_id, "status": status, "error": message}
