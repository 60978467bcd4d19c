"""Where a request's trail, notes and once-only markers live, and how they are found again.

``Index`` is the seam between the ledger's rules and an engine's storage. ``PromiseIndex``
keeps everything as promises on engines that answer ``promise.search`` by tag (Mailgate's
embedded engine, ``mailgate engine``, a Resonate Server): every record's id extends the
request's id (``<request>:audit.<n>``, ``<request>:note.<…>``, ``<request>:once.<…>``), so the
engine's retention removes them with the request, and each is tagged with its request so one
search reads them all. An engine without search (resonate-pg) gets an ``Index`` of its own.

The newest event of each request stays *pending* and every older one is resolved when its
successor is written: a search for pending events with a state or approver tag is therefore a
listing of requests, one row each, at the cost of one page per page of results. A crash between
writing an event and resolving its predecessor leaves two pending events; ``chain`` resolves
the older one the next time the trail is read.
"""

from __future__ import annotations

import hashlib
import itertools
import secrets as pysecrets
from dataclasses import dataclass, field
from typing import Any, Protocol

from resonate.error import ServerError
from resonate.ids import join_id
from resonate.resonate import Resonate
from resonate.types import PromiseRecord, Value

from service.domain import pair_key
from service.ledger.audit import Event
from service.status import FINISHED_STATES

REQUEST_TAG = "mailgate:request"
KIND_TAG = "mailgate:kind"
STATE_TAG = "mailgate:state"
OPEN_TAG = "mailgate:open"
PAIR_TAG = "mailgate:pair"
APPROVER_TAG_PREFIX = "mailgate:to:"
#: Tags the SDK puts on a workflow's promises: its root's id, and "settled from outside" (a round).
ORIGIN_TAG = "resonate:origin"
EXTERNAL_TAG = "resonate:external"
#: Records outlive any request they belong to; retention, not their timeout, removes them.
RECORD_TIMEOUT_MS = 10 * 365 * 86_400_000
SEARCH_PAGE = 100


@dataclass(frozen=True)
class Note:
    detail: str
    at: int


@dataclass(frozen=True)
class Chain:
    """A request's events in order, and the newest progress note, as read together."""

    events: list[Event] = field(default_factory=list)
    note: Note | None = None

    @property
    def head(self) -> Event | None:
        return self.events[-1] if self.events else None

    def keyed(self, key: str) -> Event | None:
        return next((e for e in self.events if e.key == key), None)


@dataclass(frozen=True)
class HeadQuery:
    state: str | None = None
    open: bool | None = None
    approver: str | None = None
    pair: str | None = None


class Index(Protocol):
    async def chain(self, request_id: str) -> Chain: ...

    async def put_event(self, event: Event, previous: Event | None) -> Event:
        """Write ``event`` at its ``seq`` unless that place is taken; return what is there."""

    async def heads(
        self, query: HeadQuery, limit: int, cursor: str | None
    ) -> tuple[list[Event], str | None]: ...

    async def claim(self, request_id: str, name: str, now: int) -> bool:
        """True for exactly one caller per (request, name), across processes and restarts."""

    async def put_note(self, request_id: str, detail: str, now: int) -> None: ...

    async def rounds(self, request_id: str) -> list[PromiseRecord]:
        """The request's settled rounds (promises its workflow created with ``ctx.promise``)."""


class PromiseIndex:
    def __init__(self, resonate: Resonate) -> None:
        self._resonate = resonate
        self._notes = itertools.count()

    async def chain(self, request_id: str) -> Chain:
        events: list[tuple[Event, str]] = []
        notes: list[tuple[str, Note]] = []
        for record in await self._search(None, {REQUEST_TAG: request_id}):
            kind = record.tags.get(KIND_TAG)
            if kind == "event":
                events.append((Event.from_value(record.param.data), record.state))
            elif kind == "note" and isinstance(record.param.data, dict):
                notes.append((record.id, Note(**record.param.data)))
        events.sort(key=lambda pair: pair[0].seq)
        stale = [e for e, state in events[:-1] if state == "pending"]
        for event in stale:
            await self._retire(event)
        note = max(notes, key=lambda pair: pair[0])[1] if notes else None
        return Chain([e for e, _ in events], note)

    async def put_event(self, event: Event, previous: Event | None) -> Event:
        tags = {REQUEST_TAG: event.request_id, KIND_TAG: "event", **_head_tags(event)}
        record = await self._resonate.promises.create(
            _event_id(event.request_id, event.seq),
            event.at + RECORD_TIMEOUT_MS,
            Value(data=event.to_value()),
            tags,
        )
        stored = Event.from_value(record.param.data)
        if previous is not None and stored.mac == event.mac:
            await self._retire(previous)
        return stored

    async def heads(
        self, query: HeadQuery, limit: int, cursor: str | None
    ) -> tuple[list[Event], str | None]:
        tags = {KIND_TAG: "event"}
        if query.state is not None:
            tags[STATE_TAG] = query.state
        if query.open is not None:
            tags[OPEN_TAG] = "1" if query.open else "0"
        if query.approver is not None:
            tags[APPROVER_TAG_PREFIX + query.approver] = "1"
        if query.pair is not None:
            tags[PAIR_TAG] = query.pair
        page = await self._resonate.promises.search(
            state="pending", tags=tags, limit=limit, cursor=cursor
        )
        newest: dict[str, Event] = {}
        for record in page.promises:
            event = Event.from_value(record.param.data)
            known = newest.get(event.request_id)
            if known is None or event.seq > known.seq:
                newest[event.request_id] = event
        return list(newest.values()), page.cursor

    async def claim(self, request_id: str, name: str, now: int) -> bool:
        digest = hashlib.blake2b(name.encode(), digest_size=12).hexdigest()
        nonce = pysecrets.token_hex(8)
        record = await self._resonate.promises.create(
            join_id(request_id, f"once.{digest}"),
            now + RECORD_TIMEOUT_MS,
            Value(data={"name": name, "nonce": nonce}),
            {REQUEST_TAG: request_id, KIND_TAG: "once"},
        )
        stored = record.param.data
        return isinstance(stored, dict) and stored.get("nonce") == nonce

    async def put_note(self, request_id: str, detail: str, now: int) -> None:
        await self._resonate.promises.create(
            join_id(request_id, f"note.{now:015d}.{next(self._notes):06d}"),
            now + RECORD_TIMEOUT_MS,
            Value(data={"detail": detail, "at": now}),
            {REQUEST_TAG: request_id, KIND_TAG: "note"},
        )

    async def rounds(self, request_id: str) -> list[PromiseRecord]:
        return [
            record
            for record in await self._search(None, {ORIGIN_TAG: request_id})
            if record.tags.get(EXTERNAL_TAG) == "true" and record.state != "pending"
        ]

    async def _retire(self, event: Event) -> None:
        """No longer the newest: out of the listings, still in the trail."""
        await self._resonate.promises.resolve(
            _event_id(event.request_id, event.seq), Value(data=None)
        )

    async def _search(self, state: str | None, tags: dict[str, str]) -> list[PromiseRecord]:
        found: list[PromiseRecord] = []
        cursor: str | None = None
        while True:
            page = await self._resonate.promises.search(
                state=state, tags=tags, limit=SEARCH_PAGE, cursor=cursor
            )
            found.extend(page.promises)
            cursor = page.cursor
            if not cursor:
                return found


def _event_id(request_id: str, seq: int) -> str:
    return join_id(request_id, f"audit.{seq}")


def _head_tags(event: Event) -> dict[str, str]:
    """What a listing filters on, from the row the event carries."""
    return {
        STATE_TAG: event.state,
        OPEN_TAG: "0" if event.state in FINISHED_STATES else "1",
        PAIR_TAG: pair_of(event.row),
        **{APPROVER_TAG_PREFIX + a: "1" for a in approvers_of(event.row)},
    }


def approvers_of(row: dict[str, Any]) -> list[str]:
    """Who decides the request a listing row shows (rows before several approvers had one)."""
    return list(row.get("approvers") or [row["approver"]])


def pair_of(row: dict[str, Any]) -> str:
    """The (page, approvers, policy) key of the request a listing row shows (rows from
    before several approvers lack it: one approver, deciding alone)."""
    return str(row.get("pair") or pair_key(row["url"], row["approver"]))


async def get_promise(resonate: Resonate, promise_id: str) -> PromiseRecord | None:
    try:
        return await resonate.promises.get(promise_id)
    except ServerError as exc:
        if exc.code == 404:
            return None
        raise
