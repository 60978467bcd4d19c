"""The one owner of Mailgate's durable state, in Mailgate's words.

Everything the gateway, the inbox, the CLI and the workflow's steps keep or read about a
request goes through ``Ledger``: start a request, find a pair's latest one, read a request with
its trail, list requests, settle or close a round, claim a once-only fact, note progress, append
to and check the audit trail. Only this package knows how the SDK names and tags promises.

Reads go through an ``Index`` (``service.ledger.index``): promises found by tag on engines that
search, a table of its own elsewhere. Rounds and workflows are the SDK's own promises and are
read and settled through its public promise API on every engine.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from resonate.ids import join_id, origin_of
from resonate.resonate import Resonate, default_resolve_target
from resonate.types import PromiseRecord, Value

from service import status
from service.domain import (
    WORKER_GROUP,
    WORKFLOW_NAME,
    WORKFLOW_PREFIX,
    Decision,
    Request,
    Seal,
    generation_of,
)
from service.ledger import audit
from service.ledger.audit import Event, Verification
from service.ledger.index import (
    EXTERNAL_TAG,
    ORIGIN_TAG,
    Chain,
    HeadQuery,
    Index,
    PromiseIndex,
    get_promise,
)
from service.status import RequestView

logger = logging.getLogger(__name__)

BRANCH_TAG = "resonate:branch"
PARENT_TAG = "resonate:parent"
SCOPE_TAG = "resonate:scope"
TARGET_TAG = "resonate:target"
READINESS_PROBE = "mailgate-readiness-probe"
#: A job a worker did not finish in this long (every worker down for a week) is given up.
JOB_TIMEOUT_MS = 7 * 86_400_000
LISTING_LIMIT_MAX = 500


@dataclass(frozen=True)
class Record:
    """A request as the ledger holds it: what was submitted, its trail, and how its workflow
    ended when the trail does not say (``ended``)."""

    request_id: str
    request: Request
    chain: Chain
    ended: str | None = None

    def view(self) -> RequestView:
        note = (self.chain.note.detail, self.chain.note.at) if self.chain.note else None
        return status.build(
            self.request_id, self.request, self.chain.events, ended=self.ended, note=note
        )

    @property
    def seal(self) -> Seal | None:
        head = self.chain.head
        return head.seal() if head else None


@dataclass(frozen=True)
class Round:
    """A round's promise and the request it belongs to, read for a decision."""

    round_id: str
    record: Record
    pending: bool
    state: str
    decision: Decision | None

    @property
    def number(self) -> int:
        """The round's number: from its ``asked`` record, or, when the decision beat that record
        (the email went out, the record not yet), the summary it follows."""
        events = self.record.chain.events
        for event in events:
            if event.kind == "asked" and event.data.get("round_id") == self.round_id:
                return int(event.data["round"])
        return max(1, sum(1 for e in events if e.kind == "summarized"))


@dataclass(frozen=True)
class Listing:
    rows: list[dict[str, Any]]
    cursor: str | None


class Ledger:
    def __init__(
        self,
        resonate: Resonate,
        *,
        secrets: Sequence[str],
        clock: Callable[[], int],
        index: Index | None = None,
    ) -> None:
        self.resonate = resonate
        self.secrets = tuple(secrets)
        self.clock = clock
        self.index: Index = index if index is not None else PromiseIndex(resonate)

    # ── requests ───────────────────────────────────────────────────────────────────────

    async def ping(self) -> None:
        """Raises when the engine cannot be reached."""
        await get_promise(self.resonate, READINESS_PROBE)

    async def start(
        self, request_id: str, request: Request, *, timeout: timedelta, version: int
    ) -> bool:
        """Start the workflow for ``request`` unless ``request_id`` exists; True when this call
        created it. Records ``submitted`` at once, so the pair is found by the next submit.

        The root is the promise ``rpc`` would create (the same param and tags, so the engine
        makes and dispatches its task the same way), created directly: its answer is the stored
        root, which says in the same round trip whose submission it holds, and no handle is
        left waiting for a result nobody reads.
        """
        root = await self.resonate.promises.create(
            request_id,
            self.clock() + int(timeout.total_seconds() * 1000),
            Value(
                data={
                    "func": WORKFLOW_NAME,
                    "args": [request.to_value()],
                    "kwargs": {},
                    "version": version,
                }
            ),
            {
                ORIGIN_TAG: request_id,
                BRANCH_TAG: request_id,
                PARENT_TAG: request_id,
                SCOPE_TAG: "global",
                TARGET_TAG: worker_target(),
            },
        )
        stored = request_of(root)
        if stored is None:
            msg = f"{request_id} exists but is not a Mailgate request"
            raise ValueError(msg)
        await self.append(
            request_id, "submitted", {"request": stored.to_value()}, key="submitted", chain=Chain()
        )
        return stored.nonce == request.nonce

    async def latest(self, pair: str) -> Event | None:
        """The newest event of the pair's newest request still kept, or None."""
        heads, _ = await self.index.heads(HeadQuery(pair=pair), LISTING_LIMIT_MAX, None)
        return max(heads, key=lambda e: generation_of(e.request_id), default=None)

    async def read(self, request_id: str) -> Record | None:
        if not request_id.startswith(WORKFLOW_PREFIX):
            return None
        root = await get_promise(self.resonate, request_id)
        request = request_of(root)
        if root is None or request is None:
            return None
        chain = await self.index.chain(request_id)
        return Record(request_id, request, chain, _ended(root))

    async def view(self, request_id: str) -> RequestView | None:
        record = await self.read(request_id)
        return record.view() if record else None

    async def listing(
        self,
        *,
        state: str | None = None,
        approver: str | None = None,
        limit: int = 50,
        cursor: str | None = None,
    ) -> Listing:
        """A page of listing rows. Without ``state``, open requests come first: the cursor says
        which half it is in (``o:``/``d:``) and where."""
        limit = max(1, min(limit, LISTING_LIMIT_MAX))
        if state is not None:
            heads, after = await self.index.heads(
                HeadQuery(state=state, approver=approver), limit, cursor
            )
            return Listing([h.row for h in heads], after)
        phase, _, position = (cursor or "o:").partition(":")
        rows: list[dict[str, Any]] = []
        while len(rows) < limit and phase in ("o", "d"):
            heads, after = await self.index.heads(
                HeadQuery(open=phase == "o", approver=approver),
                limit - len(rows),
                position or None,
            )
            rows.extend(h.row for h in heads)
            if after:
                return Listing(rows, f"{phase}:{after}")
            phase, position = ("d" if phase == "o" else "end"), ""
        return Listing(rows, "d:" if phase == "d" and rows else None)

    # ── rounds ─────────────────────────────────────────────────────────────────────────

    async def round(self, round_id: str) -> Round | None:
        """The round and its request, or None when it is no round of a Mailgate request."""
        promise = await get_promise(self.resonate, round_id)
        if promise is None or promise.tags.get(EXTERNAL_TAG) != "true":
            return None
        request_id = origin_of(round_id)
        chain = await self.index.chain(request_id)
        request = _submitted(chain)
        ended = None
        if request is None:
            root = await get_promise(self.resonate, request_id)
            request, ended = request_of(root), _ended(root)
            if request is None:
                return None
        return Round(
            round_id,
            Record(request_id, request, chain, ended),
            promise.state == "pending",
            promise.state,
            _decision(promise.value.data),
        )

    async def settle_round(self, round_id: str, decision: Decision) -> tuple[str, Decision | None]:
        """Resolve the round with ``decision`` unless it is settled; the first writer wins, so
        the caller compares the stored decision's nonce with its own."""
        settled = await self.resonate.promises.resolve(round_id, Value(data=decision.to_value()))
        return settled.state, _decision(settled.value.data)

    async def close_round(self, round_id: str, why: str) -> None:
        await self.resonate.promises.reject(round_id, Value(data={"closed": why}))

    async def dispatch(self, request_id: str, key: str, func: str, *args: Any) -> str:
        """Have a worker run the registered workflow ``func(*args)`` for this request, once per
        ``key``: a durable job under the request (as ``ctx.detached`` would start it from a
        workflow), for work a gateway must not do itself, like emailing a delegate."""
        digest = hashlib.blake2b(key.encode(), digest_size=8).hexdigest()
        job_id = join_id(request_id, f"job.{digest}")
        await self.resonate.promises.create(
            job_id,
            self.clock() + JOB_TIMEOUT_MS,
            Value(data={"func": func, "args": list(args), "kwargs": {}, "version": 1}),
            {
                ORIGIN_TAG: request_id,
                BRANCH_TAG: job_id,
                PARENT_TAG: request_id,
                SCOPE_TAG: "global",
                TARGET_TAG: worker_target(),
            },
        )
        return job_id

    async def stop_watcher(self, watcher_id: str) -> None:
        """Cancel a deadline watcher's workflow: its pending sleep then wakes nothing."""
        await self.resonate.promises.cancel(watcher_id, Value(data={"stopped": True}))

    # ── facts ──────────────────────────────────────────────────────────────────────────

    async def chain(self, request_id: str) -> Chain:
        return await self.index.chain(request_id)

    async def append(
        self,
        request_id: str,
        kind: str,
        data: dict[str, Any],
        *,
        key: str | None = None,
        chain: Chain | None = None,
        at: int | None = None,
        unless: Callable[[Event], bool] | None = None,
    ) -> Event:
        """Add an event after the newest one. With ``key``, an event already holding that key
        is returned instead (a step that runs twice records its fact once). With ``unless``,
        the first event it holds for, in the chain or written meanwhile by another process, is
        returned instead (a vote never lands after its round's decision). ``at`` is for facts
        recorded after the fact (an imported history); it defaults to now.

        Appenders in other processes may write the same place first: the engine answers a
        create of an existing id with the stored record, which is then folded in and the next
        place tried, so concurrent appends queue up into one chain and never fork it.
        """
        if chain is None:
            chain = await self.index.chain(request_id)
        if key is not None and (found := chain.keyed(key)) is not None:
            return found
        if unless is not None and (found := next(filter(unless, chain.events), None)):
            return found
        events = list(chain.events)
        request = _submitted(chain) or _request_in(kind, data)
        if request is None:
            await self._record_submitted(request_id)
            return await self.append(request_id, kind, data, key=key, unless=unless)
        before = status.build(request_id, request, events)
        now = self.clock() if at is None else at
        while True:
            prev = events[-1] if events else None
            after = status.advance(before, kind, now, data)
            mine = audit.signed(
                Event(
                    request_id=request_id,
                    seq=len(events) + 1,
                    at=now,
                    kind=kind,
                    data=data,
                    key=key,
                    state=after.state,
                    row=after.row(),
                    prev=prev.hash if prev else "",
                ),
                self.secrets,
            )
            stored = await self.index.put_event(mine, prev)
            if stored.mac == mine.mac:
                return stored
            if key is not None and stored.key == key:
                return stored
            if unless is not None and unless(stored):
                return stored
            events.append(stored)
            before = status.advance(before, stored.kind, stored.at, stored.data)

    async def claim_once(self, request_id: str, name: str) -> bool:
        """True for exactly one caller per (request, name): "send the help note once"."""
        return await self.index.claim(request_id, name, self.clock())

    async def note(self, request_id: str, detail: str) -> None:
        await self.index.put_note(request_id, detail, self.clock())

    # ── audit ──────────────────────────────────────────────────────────────────────────

    async def verify(self, request_id: str) -> Verification | None:
        root = await get_promise(self.resonate, request_id)
        if request_of(root) is None:
            return None
        chain = await self.index.chain(request_id)
        seals = [(f"round {r.id}", s) for r, s in await self._round_seals(request_id)]
        outcome = root.value.data if root is not None else None
        if isinstance(outcome, dict) and (seal := Seal.from_value(outcome.get("seal"))):
            seals.append(("the final outcome", seal))
        return audit.verify(request_id, chain.events, self.secrets, seals)

    async def request_ids(self) -> AsyncIterator[str]:
        """Every request the ledger keeps, open ones first."""
        cursor: str | None = None
        while True:
            page = await self.listing(limit=LISTING_LIMIT_MAX, cursor=cursor)
            for row in page.rows:
                yield row["id"]
            cursor = page.cursor
            if not cursor:
                return

    async def _round_seals(self, request_id: str) -> list[tuple[PromiseRecord, Seal]]:
        found = []
        for record in await self.index.rounds(request_id):
            decision = _decision(record.value.data)
            if decision is not None and decision.seal is not None:
                found.append((record, decision.seal))
        return found

    async def _record_submitted(self, request_id: str) -> None:
        request = request_of(await get_promise(self.resonate, request_id))
        if request is None:
            msg = f"no request {request_id} to record events for"
            raise LookupError(msg)
        await self.append(request_id, "submitted", {"request": request.to_value()}, key="submitted")


def request_of(root: PromiseRecord | None) -> Request | None:
    """The request a workflow root carries in its param, or None for anything else."""
    if root is None:
        return None
    param = root.param.data
    if not isinstance(param, dict) or param.get("func") != WORKFLOW_NAME:
        return None
    args = param.get("args") or []
    try:
        return Request.from_value(args[0]) if args else None
    except ValueError:
        return None


def workflow_version(root: PromiseRecord) -> int:
    param = root.param.data
    return int(param.get("version", 1)) if isinstance(param, dict) else 1


def worker_target() -> str:
    return default_resolve_target(WORKER_GROUP)


def _submitted(chain: Chain) -> Request | None:
    first = chain.events[0] if chain.events else None
    return _request_in(first.kind, first.data) if first else None


def _request_in(kind: str, data: dict[str, Any]) -> Request | None:
    return Request.from_value(data["request"]) if kind == "submitted" else None


def _decision(value: object) -> Decision | None:
    try:
        return Decision.from_value(value)
    except ValueError:
        return None


def _ended(root: PromiseRecord | None) -> str | None:
    """Why a workflow's root settled, when only its promise can say: its own outcome (release
    0.1 resolved the root only on approval), the engine's timeout, or the error it failed with."""
    if root is None or root.state == "pending":
        return None
    value = root.value.data
    if root.state == "resolved":
        state = value.get("state") if isinstance(value, dict) else None
        return None if state in (None, "approved") else str(value.get("detail", state))
    if root.state == "rejected_timedout":
        return "timed out"
    if isinstance(value, dict) and isinstance(value.get("message"), str):
        return value["message"]
    return root.state.replace("_", " ")


def with_seal(outcome: dict[str, Any], seal: Seal | None) -> dict[str, Any]:
    return {**outcome, "seal": seal.to_value() if seal else None}
