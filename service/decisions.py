"""The one place a decision is committed: every transport ends here.

A round's promise settles once. Resolving an already-settled promise answers with the *first*
value, so "did my decision win?" is answered by comparing the stored nonce with ours, never by
the absence of an error. Before resolving, the round must belong to a Mailgate request, still
be waiting, and (when the caller names one) be addressed to that approver.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from resonate.resonate import Resonate
from resonate.types import Value

from service.domain import Decision, Verdict, Via, normalize_email
from service.errors import BadToken
from service.requests import get_record, request_of

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Accepted:
    request_id: str
    decision: Decision


@dataclass(frozen=True)
class AlreadyDecided:
    request_id: str
    decision: Decision | None
    state: str


Outcome = Accepted | AlreadyDecided


async def decide(
    resonate: Resonate,
    *,
    promise_id: str,
    verdict: Verdict,
    reason: str | None,
    by: str,
    via: Via,
    now_ms: int,
    approver: str | None = None,
) -> Outcome:
    """Resolve the round ``promise_id``; ``approver``, when given, must be the request's."""
    request_id = promise_id.partition(":")[0]
    record = await get_record(resonate, promise_id)
    root = await get_record(resonate, request_id)
    request = request_of(root) if root else None
    if record is None or request is None or record.tags.get("resonate:external") != "true":
        raise BadToken("this decision is for a request Mailgate does not know")
    if approver is not None and normalize_email(approver) != normalize_email(request["approver"]):
        raise BadToken("this decision link was issued to someone else")
    if record.state != "pending":
        return AlreadyDecided(request_id, _stored(record.value.data), record.state)

    mine = Decision.new(verdict, reason, by, via, now_ms)
    settled = await resonate.promises.resolve(promise_id, Value(data=mine.to_value()))
    stored = _stored(settled.value.data)
    if settled.state != "resolved" or stored is None or stored.nonce != mine.nonce:
        return AlreadyDecided(request_id, stored, settled.state)
    logger.info(
        "decision %s on %s by %s via %s",
        verdict,
        promise_id,
        by,
        via,
        extra={"event": "decision", "request_id": request_id, "verdict": verdict, "via": via},
    )
    return Accepted(request_id, mine)


def _stored(value: object) -> Decision | None:
    try:
        return Decision.from_value(value)
    except ValueError:
        return None
