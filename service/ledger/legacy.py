"""Requests started by release 0.1 get the audit trail this release reads everything from.

Release 0.1 kept no events: what happened to a request was in its workflow's own promises (the
checkpointed summaries and "asked" records, the rounds' decision promises, the root's outcome).
``adopt`` reads those once, the first time a worker of this release starts on a data dir, and
writes the events they imply, each marked ``imported`` and carrying its original time. The
events use the same keys the steps use, so a version 1 workflow resuming at the same moment
records nothing twice. This is the only module that still knows release 0.1's shapes; it can go
when no data dir from that release is left.
"""

from __future__ import annotations

import logging
from typing import Any

from resonate.types import PromiseRecord, Value

from service.domain import Decision, Request
from service.ledger.core import (
    EXTERNAL_TAG,
    ORIGIN_TAG,
    TARGET_TAG,
    Ledger,
    request_of,
    worker_target,
)
from service.ledger.index import RECORD_TIMEOUT_MS, get_promise

logger = logging.getLogger(__name__)

ADOPTED_MARKER = "mailgate-ledger-adopted-release-0.1"
SEARCH_PAGE = 100


async def adopt(ledger: Ledger) -> int:
    """Give every request without a trail its events; returns how many were adopted. Runs to
    the end once per engine (a marker says so), idempotently if interrupted."""
    if await get_promise(ledger.resonate, ADOPTED_MARKER) is not None:
        return 0
    adopted = 0
    for root in await _search(ledger, {TARGET_TAG: worker_target()}):
        request = request_of(root)
        if request is None or (await ledger.chain(root.id)).events:
            continue
        children = await _search(ledger, {ORIGIN_TAG: root.id})
        for kind, at, data, key in _events(root, request, children):
            await ledger.append(root.id, kind, {**data, "imported": True}, key=key, at=at)
        adopted += 1
    now = ledger.clock()
    await ledger.resonate.promises.create(
        ADOPTED_MARKER, now + RECORD_TIMEOUT_MS, Value(data={"adopted": adopted}), {}
    )
    await ledger.resonate.promises.resolve(ADOPTED_MARKER, Value(data={"adopted": adopted}))
    if adopted:
        logger.info("gave %d request(s) from release 0.1 an audit trail", adopted)
    return adopted


Imported = tuple[str, int, dict[str, Any], str]


def _events(root: PromiseRecord, request: Request, children: list[PromiseRecord]) -> list[Imported]:
    """Release 0.1's children, in creation order (``<id>:1``, ``<id>:2``, …): per round a
    summary, the round's promise, its "asked" record; the decision is told after the asking."""
    events: list[Imported] = [
        ("submitted", request.submitted_at, {"request": request.to_value()}, "submitted")
    ]
    number = 0
    round_id: str | None = None
    decided: Imported | None = None
    for child in sorted(children, key=lambda c: _sequence(root.id, c.id)):
        if _sequence(root.id, child.id) < 0:
            continue
        value = child.value.data
        if child.tags.get(EXTERNAL_TAG) == "true":
            decision = _decision(value) if child.state == "resolved" else None
            if decision is not None:
                data = {"round": number, "round_id": child.id, **decision.to_value()}
                decided = ("decided", decision.at, data, f"decided:{child.id}")
            round_id = child.id
        elif isinstance(value, dict) and value.get("kind") == "summary":
            events.extend([decided] if decided else [])
            decided = None
            number += 1
            data = {"round": number, **value}
            events.append(("summarized", child.created_at, data, f"summarized:{number}"))
        elif isinstance(value, dict) and value.get("kind") == "asked" and round_id is not None:
            at = int(value.get("at", child.created_at))
            data = {"round": number, "round_id": round_id, "channel": value.get("via")}
            events.append(("asked", at, data, f"asked:{round_id}"))
    events.extend([decided] if decided else [])
    ended = _ending(root, events)
    if ended is not None:
        events.append(("finished", root.settled_at or root.created_at, ended, "finished"))
    return events


def _ending(root: PromiseRecord, events: list[Imported]) -> dict[str, Any] | None:
    if root.state == "pending":
        return None
    if root.state == "resolved":
        last = next((e for e in reversed(events) if e[0] == "decided"), None)
        by = f"approved by {last[2].get('by')} via {last[2].get('via')}" if last else "approved"
        return {"state": "approved", "detail": by}
    value = root.value.data
    if root.state == "rejected_timedout":
        return {"state": "failed", "detail": "timed out"}
    message = value.get("message") if isinstance(value, dict) else None
    return {"state": "failed", "detail": message or root.state.replace("_", " ")}


def _sequence(root_id: str, child_id: str) -> int:
    tail = child_id.removeprefix(f"{root_id}:")
    return int(tail) if tail.isdigit() else -1


def _decision(value: object) -> Decision | None:
    try:
        return Decision.from_value(value)
    except ValueError:
        return None


async def _search(ledger: Ledger, tags: dict[str, str]) -> list[PromiseRecord]:
    found: list[PromiseRecord] = []
    cursor: str | None = None
    while True:
        page = await ledger.resonate.promises.search(
            state=None, tags=tags, limit=SEARCH_PAGE, cursor=cursor
        )
        found.extend(page.promises)
        cursor = page.cursor
        if not cursor:
            return found
