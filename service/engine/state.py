"""The SDK's own server state machine, indexed so its cost stays flat as the backlog grows.

``IndexedState`` *is* ``resonate.connections.local.ServerState`` (this module is the only one
that imports it): every protocol rule stays the SDK's. What changes is how it finds things.
Stock ``ServerState`` scans every promise in ``preload`` and ``enqueue_settle`` and keeps its
timers in lists it scans on every set, delete and tick, so a service holding thousands of
pending approvals slows down request by request. Here timers live in a dict plus a heap, and
promises are indexed by tag (``preload`` reads the ``resonate:branch`` index), by lineage origin
(retention), by "possibly pending" (search) and by awaiting task (``enqueue_settle``). Timers
that fall due together still fire in the order stock ``ServerState`` fires them (first
insertion order), so responses and outgoing messages are identical —
``tests/engine/test_state_equivalence.py`` runs the same request sequences through both and
compares every response.

Additions the protocol needs and the SDK's in-process machine lacks: ``promise.search``
(the Resonate Server's semantics: exact state, tag subset, ids in ascending order, the last id
as cursor, plus an ``id`` pattern with ``*``), purging finished lineages (retention), and a
snapshot form of the whole state.

Leases are volatile by design: heartbeats are not journaled, so a lease deadline read back from
disk means nothing. ``tick_for_journal`` therefore reports which leases a tick released, and
``replay_tick`` re-applies exactly those instead of trusting replayed deadlines;
``restore_timers`` re-arms every task timer when the state is loaded.
"""

from __future__ import annotations

import heapq
import re
from dataclasses import dataclass
from typing import Any

import msgspec
from resonate.connections.local import (
    PENDING_RETRY_TTL,
    DurablePromise,
    OutgoingMessage,
    PTimeout,
    ScheduleStub,
    ServerState,
    Task,
    TTimeout,
    extract_action_data,
    unwrap_request_envelope,
    wrap_response_envelope,
)
from resonate.error import ServerError

__all__ = [
    "PENDING_RETRY_TTL",
    "IndexedState",
    "OutgoingMessage",
    "Snapshot",
    "TickRecord",
    "unwrap_request_envelope",
    "wrap_response_envelope",
]

#: Request kinds that never change state (``promise.get`` may, see ``changes_state``).
READ_KINDS = frozenset({"promise.search", "schedule.get", "schedule.search"})
#: Lease renewals: they change only volatile lease deadlines and are never journaled.
VOLATILE_KINDS = frozenset({"task.heartbeat"})

SEARCH_LIMIT_DEFAULT = 100
SEARCH_LIMIT_MAX = 1000
PROMISE_STATES = frozenset(
    {"pending", "resolved", "rejected", "rejected_canceled", "rejected_timedout"}
)
ORIGIN_SEP = ":"
#: The SDK's tag on a durable sleep's promise (``ctx.sleep``).
TIMER_TAG = "resonate:timer"
#: Stale heap entries tolerated per live timer before the heap is rebuilt.
HEAP_SLACK = 2
HEAP_SLACK_MIN = 1024


def origin_of(promise_id: str) -> str:
    """The lineage origin: everything before the first ``:`` (the SDK's and server's rule)."""
    return promise_id.split(ORIGIN_SEP, 1)[0]


class Snapshot(msgspec.Struct, kw_only=True):
    """The durable part of the state. Task timers are left out: ``restore_timers`` re-arms
    them, because lease deadlines are volatile and retry deadlines only pace re-sends."""

    promises: list[DurablePromise]
    tasks: list[Task]
    schedules: list[ScheduleStub]
    p_timeouts: list[tuple[str, int]]


@dataclass(frozen=True, slots=True)
class TickRecord:
    """What a tick changed that must survive a crash: it settled promises, released leases."""

    released: list[tuple[str, int]]


class _Timers:
    """Timer table with ``ServerState``'s list semantics at heap cost.

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

    def ordered(self) -> list[tuple[str, int]]:
        return [(i, e[0]) for i, e in sorted(self.entries.items(), key=lambda kv: kv[1][1])]


class IndexedState(ServerState):
    """``ServerState`` with indexes; see the module docstring for what and why."""

    def __init__(self) -> None:
        super().__init__()
        self._p_timers = _Timers()
        self._t_timers = _Timers()
        self._by_tag: dict[tuple[str, str], dict[str, None]] = {}
        self._by_origin: dict[str, dict[str, None]] = {}
        self._maybe_pending: set[str] = set()
        self._awaiting: dict[str, set[str]] = {}

    # -- request entry point ------------------------------------------------------------

    def apply(self, now: int, req: Any) -> dict[str, Any]:
        kind = req.get("kind") if isinstance(req, dict) else None
        if kind == "promise.search":
            self.outgoing.clear()
            return self.promise_search(req.get("corrId"), req)
        try:
            return super().apply(now, req)
        finally:
            if kind == "task.suspend":
                self._index_awaits(req)

    def changes_state(self, now: int, req: Any) -> bool:
        """Whether applying ``req`` at ``now`` may change durable state (so must be journaled).

        ``promise.get`` changes state only when it times out the promise it reads.
        """
        kind = req.get("kind") if isinstance(req, dict) else None
        if kind in READ_KINDS or kind in VOLATILE_KINDS:
            return False
        if kind == "promise.get":
            p = self.promises.get(req.get("id")) if isinstance(req.get("id"), str) else None
            return p is not None and p.state == "pending" and now >= p.timeout_at
        return True

    # -- ticks ----------------------------------------------------------------------------

    def tick(self, now: int) -> None:
        self.tick_for_journal(now)

    def tick_for_journal(self, now: int) -> TickRecord | None:
        """Tick, and say what must be journaled: ``None`` when only volatile timers moved."""
        p_due = self._p_timers.due(now)
        t_due = self._t_timers.due(now)
        settles = any(
            (p := self.promises.get(i)) is not None and p.state == "pending" for i in p_due
        )
        leases = [
            (i, t.version)
            for i in t_due
            if self._t_timers.entries[i][2] == 1
            and (t := self.tasks.get(i)) is not None
            and t.state == "acquired"
        ]
        self._run_stock_tick(now, p_due, [self._t_entry(i) for i in t_due])
        released = [
            (i, v)
            for i, v in leases
            if (t := self.tasks.get(i)) is not None and t.state == "pending" and t.version == v + 1
        ]
        if settles or released:
            return TickRecord(released=released)
        return None

    def replay_tick(self, now: int, released: list[tuple[str, int]]) -> None:
        """Re-apply a journaled tick: promise timeouts as they fall due, leases as recorded."""
        p_due = self._p_timers.due(now)
        t_due = [self._t_entry(i) for i in self._t_timers.due(now)]
        t_offered = [t for t in t_due if t.typ == 0]
        t_offered += [TTimeout(id=i, typ=1, timeout=now) for i, _ in released]
        self._run_stock_tick(now, p_due, t_offered)

    def _run_stock_tick(self, now: int, p_due: list[str], t_due: list[TTimeout]) -> None:
        self.p_timeouts = [PTimeout(id=i, timeout=self._p_timers.entries[i][0]) for i in p_due]
        self.t_timeouts = t_due
        try:
            super().tick(now)
        finally:
            self.p_timeouts = []
            self.t_timeouts = []
            self._p_timers.settle_due(p_due, now)
            self._t_timers.settle_due([t.id for t in t_due if t.id in self._t_timers.entries], now)

    def _t_entry(self, timer_id: str) -> TTimeout:
        timeout, _, typ = self._t_timers.entries[timer_id]
        return TTimeout(id=timer_id, typ=typ, timeout=timeout)

    # -- timers: the stock list operations, on the indexed table ---------------------------

    def set_p_timeout(self, promise_id: str, timeout: int) -> None:
        self._p_timers.set(promise_id, timeout)

    def del_p_timeout(self, promise_id: str) -> None:
        self._p_timers.delete(promise_id)

    def set_t_timeout(self, task_id: str, typ: int, timeout: int) -> None:
        wake = self._sleeping(task_id) if typ == 0 else None
        self._t_timers.set(task_id, timeout if wake is None else max(timeout, wake), typ)

    def del_t_timeout(self, task_id: str) -> None:
        self._t_timers.delete(task_id)

    # -- durable sleeps: their task is not offered before the deadline -----------------------

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
        branch = p.tags.get("resonate:branch")
        if branch is None:
            return []
        siblings = self._by_tag.get(("resonate:branch", branch), {})
        return [self.promises[i].to_record() for i in siblings if i != promise_id]

    def enqueue_settle(self, promise_id: str) -> None:
        """Stock ``enqueue_settle``; the awaiter cleanup visits only promises the task awaits."""
        p = self.promises.get(promise_id)
        if p is not None and p.state != "pending":
            self._maybe_pending.discard(promise_id)
        t = self.tasks.get(promise_id)
        if t is None:
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
        for awaited_id in self._awaiting.pop(promise_id, ()):
            awaited = self.promises.get(awaited_id)
            if awaited is not None:
                awaited.awaiters.discard(promise_id)

    # -- promise creation: index what was created -------------------------------------------

    def promise_create(self, now: int, corr_id: Any, req: Any) -> dict[str, Any]:
        resp = super().promise_create(now, corr_id, req)
        self._index_if_new(req.get("id"))
        return resp

    def task_create(self, now: int, corr_id: Any, req: Any) -> dict[str, Any]:
        resp = super().task_create(now, corr_id, req)
        self._index_if_new(extract_action_data(req.get("action")).get("id"))
        return resp

    def _index_if_new(self, promise_id: Any) -> None:
        if not isinstance(promise_id, str):
            return
        p = self.promises.get(promise_id)
        if p is None or promise_id in self._by_origin.get(origin_of(promise_id), {}):
            return
        self._index(p)

    def _index(self, p: DurablePromise) -> None:
        self._by_origin.setdefault(origin_of(p.id), {})[p.id] = None
        for key, value in p.tags.items():
            self._by_tag.setdefault((key, value), {})[p.id] = None
        if p.state == "pending":
            self._maybe_pending.add(p.id)
        for task_id in p.awaiters:
            self._awaiting.setdefault(task_id, set()).add(p.id)

    def _index_awaits(self, req: Any) -> None:
        task_id = req.get("id")
        actions = req.get("actions")
        if not isinstance(task_id, str) or not isinstance(actions, list):
            return
        for action in actions:
            awaited = extract_action_data(action)
            awaited_id = awaited.get("awaited") if isinstance(awaited, dict) else None
            p = self.promises.get(awaited_id) if isinstance(awaited_id, str) else None
            if p is not None and task_id in p.awaiters:
                self._awaiting.setdefault(task_id, set()).add(p.id)

    # -- search -----------------------------------------------------------------------------

    def promise_search(self, corr_id: Any, req: Any) -> dict[str, Any]:
        """``promise.search`` as the Resonate Server answers it, plus an ``id`` glob."""
        try:
            query = _SearchQuery.parse(req)
        except ValueError as exc:
            return {"kind": "promise.search", "corrId": corr_id, "status": 400, "error": str(exc)}
        page = heapq.nsmallest(query.limit + 1, self._search_matches(query))
        more = len(page) > query.limit
        page = page[: query.limit]
        return {
            "kind": "promise.search",
            "corrId": corr_id,
            "status": 200,
            "promises": [self.promises[i].to_record() for i in page],
            "cursor": page[-1] if more and page else None,
        }

    def _search_matches(self, query: _SearchQuery) -> list[str]:
        candidates: list[Any] = []
        if query.exact_id is not None:
            candidates.append([query.exact_id] if query.exact_id in self.promises else [])
        if query.state == "pending":
            candidates.append(self._maybe_pending)
        for pair in query.tags.items():
            candidates.append(self._by_tag.get(pair, {}))
        pool = min(candidates, key=len) if candidates else self.promises
        matches: list[str] = []
        settled: list[str] = []
        for promise_id in pool:
            p = self.promises.get(promise_id)
            if p is None:
                continue
            if p.state != "pending" and pool is self._maybe_pending:
                settled.append(promise_id)
                continue
            if query.matches(p):
                matches.append(promise_id)
        self._maybe_pending.difference_update(settled)
        return matches

    # -- retention --------------------------------------------------------------------------

    def expired_roots(self, now: int, retention_ms: int) -> list[str]:
        """Roots settled at least ``retention_ms`` ago: their whole lineage may go."""
        expired = []
        for origin in self._by_origin:
            root = self.promises.get(origin)
            if root is None or root.state == "pending" or root.settled_at is None:
                continue
            if root.settled_at + retention_ms <= now:
                expired.append(origin)
        return expired

    def purge(self, roots: list[str]) -> int:
        """Forget every promise and task of these lineages; return how many promises went."""
        removed = 0
        for root in roots:
            for promise_id in self._by_origin.pop(root, {}):
                p = self.promises.pop(promise_id, None)
                if p is None:
                    continue
                removed += 1
                for pair in p.tags.items():
                    index = self._by_tag.get(pair)
                    if index is not None:
                        index.pop(promise_id, None)
                        if not index:
                            del self._by_tag[pair]
                self.tasks.pop(promise_id, None)
                self._maybe_pending.discard(promise_id)
                self._awaiting.pop(promise_id, None)
                self._p_timers.delete(promise_id)
                self._t_timers.delete(promise_id)
        return removed

    # -- snapshot and recovery --------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        return Snapshot(
            promises=list(self.promises.values()),
            tasks=list(self.tasks.values()),
            schedules=list(self.schedules.values()),
            p_timeouts=self._p_timers.ordered(),
        )

    @classmethod
    def from_snapshot(cls, snap: Snapshot) -> IndexedState:
        state = cls()
        state.promises = {p.id: p for p in snap.promises}
        state.tasks = {t.id: t for t in snap.tasks}
        state.schedules = {s.id: s for s in snap.schedules}
        for promise_id, timeout in snap.p_timeouts:
            state._p_timers.set(promise_id, timeout)
        for p in snap.promises:
            state._index(p)
        return state

    def restore_timers(self, now: int, dead_pids: set[str]) -> list[tuple[str, int]]:
        """Re-arm every task timer after a load; return the leases to release.

        Leases held by ``dead_pids`` (earlier incarnations of this process) are returned so the
        caller releases them through the journal. Any other lease gets a fresh full term, so a
        worker that outlived an engine restart keeps its task if it heartbeats in time. Pending
        tasks retry now; deferred ones keep their delay.
        """
        to_release = []
        for task in self.tasks.values():
            if task.state == "acquired":
                if task.pid in dead_pids:
                    to_release.append((task.id, task.version))
                ttl = task.ttl if task.ttl is not None else PENDING_RETRY_TTL
                self.set_t_timeout(task.id, 1, now + ttl)
            elif task.state == "pending":
                self.set_t_timeout(task.id, 0, self._first_delivery(task.id, now))
            else:
                self.del_t_timeout(task.id)
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
        for task in self.tasks.values():
            if task.state != "pending" or self._first_delivery(task.id, now) > now:
                continue
            p = self.promises.get(task.id)
            address = p.tags.get("resonate:target") if p is not None else None
            if address is not None:
                ready.append((address, task.id, task.version))
        return ready


class _SearchQuery:
    def __init__(
        self,
        state: str | None,
        tags: dict[str, str],
        limit: int,
        cursor: str | None,
        pattern: re.Pattern[str] | None,
        exact_id: str | None,
    ) -> None:
        self.state = state
        self.tags = tags
        self.limit = limit
        self.cursor = cursor
        self.pattern = pattern
        self.exact_id = exact_id

    @classmethod
    def parse(cls, req: dict[str, Any]) -> _SearchQuery:
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
        pattern = exact_id = None
        if id_pattern is not None:
            if not isinstance(id_pattern, str):
                raise ValueError("invalid 'id'")
            if "*" in id_pattern:
                parts = (re.escape(part) for part in id_pattern.split("*"))
                pattern = re.compile(".*".join(parts), re.DOTALL)
            else:
                exact_id = id_pattern
        return cls(state, tags, limit, cursor, pattern, exact_id)

    def matches(self, p: DurablePromise) -> bool:
        if self.cursor is not None and p.id <= self.cursor:
            return False
        if self.state is not None and p.state != self.state:
            return False
        if self.exact_id is not None and p.id != self.exact_id:
            return False
        if self.pattern is not None and self.pattern.fullmatch(p.id) is None:
            return False
        return all(p.tags.get(k) == v for k, v in self.tags.items())


def error_response(kind: Any, corr_id: Any, exc: Exception) -> dict[str, Any]:
    """The flat response for a request the state machine refused or failed on."""
    status = exc.code if isinstance(exc, ServerError) else 500
    message = exc.message if isinstance(exc, ServerError) else f"internal error: {exc}"
    return {"kind": kind, "corrId": corr_id, "status": status, "error": message}
