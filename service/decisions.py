"""Who may decide which round, and what a decision leaves behind: every channel ends here.

A round's promise settles once. Settling an already-settled promise answers with the *first*
value, so "did my decision win?" is answered by comparing the stored nonce with ours, never by
the absence of an error. Before settling, the round must belong to a Mailgate request, still
wait, and (when the channel names one) be addressed to that approver. An accepted decision is
recorded in the request's audit trail with its evidence and counted; a refused one is recorded
too, with the same evidence, so the trail shows every attempt that reached a known request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from service import votes
from service.domain import Decision, Ending, OnExpiry, Via, clip_reason, normalize_email
from service.errors import BadToken, MailgateError
from service.ledger import Chain, Ledger, Round
from service.metrics import Metrics

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Actor:
    """Who is deciding, as far as the channel can tell, and what it saw of them."""

    by: str
    via: Via
    evidence: dict[str, str] = field(default_factory=dict)

    @property
    def channel_id(self) -> str | None:
        """What makes one arrival of this actor's message unique (a reply's Message-ID)."""
        return self.evidence.get("message_id")


@dataclass(frozen=True)
class Accepted:
    request_id: str
    decision: Decision


@dataclass(frozen=True)
class AlreadyDecided:
    request_id: str
    decision: Decision | None
    state: str


@dataclass(frozen=True)
class Duplicate:
    """The same message decided this round already (a second delivery of one reply)."""

    request_id: str
    decision: Decision


@dataclass(frozen=True)
class Voted:
    """The vote is recorded; the round waits for the others."""

    request_id: str
    verdict: Ending


@dataclass(frozen=True)
class AlreadyVoted:
    """This approver answered this round before; a vote is final."""

    request_id: str
    verdict: Ending


Outcome = Accepted | AlreadyDecided | Duplicate | Voted | AlreadyVoted

#: The worker job that emails a delegate (registered by ``service.workflow``).
DELEGATION_JOB = "mailgate.delegation"


class Undelegable(MailgateError):
    """The delegation cannot be made; the message says why."""


@dataclass(frozen=True)
class Cancelling:
    """The cancellation is recorded; the request ends ``cancelled`` as soon as its workflow
    sees it (at once when a round waits, else before its next email)."""

    request_id: str


@dataclass(frozen=True)
class Finished:
    request_id: str
    state: str


#: What the clock's decision is, by the submitter's ``on_expiry``.
EXPIRY_VERDICTS: dict[OnExpiry, Ending] = {
    "expire": "expire",
    "reject": "reject",
    "approve": "approve",
}


class Decisions:
    def __init__(self, ledger: Ledger, metrics: Metrics, clock: Callable[[], int]) -> None:
        self.ledger = ledger
        self.metrics = metrics
        self.clock = clock

    async def find(self, round_id: str) -> Round:
        found = await self.ledger.round(round_id)
        if found is None:
            raise BadToken("this decision is for a request Mailgate does not know")
        return found

    async def decide(
        self,
        found: Round,
        *,
        verdict: Ending,
        reason: str | None,
        actor: Actor,
        approver: str | None = None,
        edited_summary: str | None = None,
    ) -> Outcome:
        """Answer ``found`` for ``approver`` (who must be one the round is addressed to), or
        settle it outright when no approver is named (the clock, a cancellation, the operator).

        Under ``any`` (and for a round with one addressee) the answer settles the round; under
        ``all`` and ``min`` it is a vote, and the round settles once the votes decide it.
        """
        if approver is not None:
            approver = normalize_email(approver)
            if approver not in addressed(found):
                await self.refuse(found, "addressed to someone else", actor)
                raise BadToken("this decision link was issued to someone else")
        if not found.pending:
            return await self._late(found, found.decision, found.state, actor)
        request = found.record.request
        if approver is None or request.quorum.kind == "any" or len(addressed(found)) == 1:
            mine = Decision.new(
                verdict,
                reason,
                actor.by,
                actor.via,
                self.clock(),
                actor.evidence,
                edited_summary,
            )
            settled = await self._settle(found, mine)
            if isinstance(settled, Accepted):
                return settled
            return await self._late(found, settled[1], settled[0], actor)
        return await self._vote(found, verdict, reason, actor, approver, edited_summary)

    async def _vote(
        self,
        found: Round,
        verdict: Ending,
        reason: str | None,
        actor: Actor,
        approver: str,
        edited_summary: str | None,
    ) -> Outcome:
        """Record the vote (once per approver per round), then settle the round if the votes
        so far decide it: written before read, so concurrent votes cannot all miss it."""
        request_id = found.record.request_id
        now = self.clock()
        data = {
            "round": found.number,
            "round_id": found.round_id,
            "verdict": verdict,
            "reason": clip_reason(reason),
            "at": now,
            "edited_summary": edited_summary,
            **_actor(actor),
        }
        event = await self.ledger.append(
            request_id,
            "voted",
            data,
            key=f"vote:{found.round_id}:{approver}",
            chain=found.record.chain,
            unless=lambda e: e.kind == "decided" and e.data.get("round_id") == found.round_id,
        )
        if event.kind == "decided":
            settled = await self.find(found.round_id)
            return await self._late(settled, settled.decision, settled.state, actor)
        if event.data != data:
            return AlreadyVoted(request_id, event.data["verdict"])
        self.metrics.decisions.labels(actor.via, f"vote-{verdict}").inc()
        chain = await self.ledger.chain(request_id)
        result = votes.tally(
            found.record.request.quorum,
            votes.approvers(found.record.request, chain.events),
            votes.escalated(found.record.request, chain.events, found.round_id),
            votes.votes(chain.events, found.round_id),
        )
        if result is None:
            return Voted(request_id, verdict)
        ending, carried = result
        decided = Decision.new(
            ending,
            votes.joined_reasons(carried) if ending == "reject" else None,
            ", ".join(v.voter for v in carried),
            carried[-1].via if len(carried) == 1 else "votes",
            now,
            {
                "policy": str(found.record.request.quorum),
                "votes": ",".join(f"{v.voter}={v.verdict}" for v in carried),
            },
            next((v.edited_summary for v in reversed(carried) if v.edited_summary), None),
        )
        outcome = await self._settle(replace_chain(found, chain), decided)
        if isinstance(outcome, Accepted):
            return outcome
        return Voted(request_id, verdict)  # another voter's process settled it: the same verdict

    async def _settle(self, found: Round, mine: Decision) -> Accepted | tuple[str, Decision | None]:
        """Settle the round with ``mine``; the round's state and stored decision when another
        writer was first."""
        request_id = found.record.request_id
        mine = mine.sealed(found.record.seal)
        state, stored = await self.ledger.settle_round(found.round_id, mine)
        if stored is None or stored.nonce != mine.nonce:
            return state, stored
        await self.ledger.append(
            request_id,
            "decided",
            {"round": found.number, "round_id": found.round_id, **mine.to_value()},
            key=f"decided:{found.round_id}",
            chain=found.record.chain,
        )
        self.metrics.decisions.labels(mine.via, mine.verdict).inc()
        logger.info(
            "decision %s on %s by %s via %s",
            mine.verdict,
            found.round_id,
            mine.by,
            mine.via,
            extra={
                "event": "decision",
                "request_id": request_id,
                "verdict": mine.verdict,
                "via": mine.via,
            },
        )
        return Accepted(request_id, mine)

    async def delegate(self, found: Round, *, giver: str, to: str, actor: Actor) -> Round:
        """Hand ``giver``'s place among the addressees to ``to``, for this round and the ones
        after it. Only through a signed link or the operator API: a reply's From can be
        forged. The delegate's own email is sent by a worker (a job of the request)."""
        giver, to = normalize_email(giver), normalize_email(to)
        if giver not in addressed(found):
            raise BadToken("this decision link was issued to someone else")
        if to in addressed(found):
            raise Undelegable(f"{to} already decides this round")
        if not found.pending:
            raise Undelegable("this round is no longer waiting")
        if any(v.voter == giver for v in votes.votes(found.record.chain.events, found.round_id)):
            raise Undelegable(f"{giver} already answered this round")
        request_id = found.record.request_id
        await self.ledger.append(
            request_id,
            "delegated",
            {
                "round": found.number,
                "round_id": found.round_id,
                "from": giver,
                "to": to,
                **_actor(actor),
            },
            key=f"delegated:{found.round_id}:{giver}",
            chain=found.record.chain,
        )
        await self.ledger.dispatch(
            request_id,
            f"delegation.{found.number}.{to}",
            DELEGATION_JOB,
            request_id,
            found.round_id,
            to,
        )
        return await self.find(found.round_id)

    async def expire(self, found: Round, on_expiry: OnExpiry, deadline_at: int) -> Outcome:
        """The clock decides a round nobody decided by its deadline, as any decider does: the
        first settle wins, so a person's last-second answer and the deadline never both count.
        Approval by expiry happens only when the submitter asked for it, and says so."""
        evidence = {"deadline_at": str(deadline_at), "on_expiry": on_expiry}
        actor = Actor("mailgate", "expiry", evidence)
        return await self.decide(
            found, verdict=EXPIRY_VERDICTS[on_expiry], reason=None, actor=actor
        )

    async def cancel(
        self, request_id: str, *, actor: Actor, reason: str | None
    ) -> Cancelling | Finished | None:
        """Record the cancellation, then end the waiting round with it if one waits. The
        workflow checks for the record before and after each email, and this reads the trail
        after writing it, so a round being asked at this very moment is caught by one or the
        other. None when there is no such request."""
        record = await self.ledger.read(request_id)
        if record is None:
            return None
        view = record.view()
        if view.finished:
            return Finished(request_id, view.state)
        await self.ledger.append(
            request_id,
            "cancel_requested",
            {"reason": reason, **_actor(actor)},
            key="cancel_requested",
            chain=record.chain,
        )
        waiting = waiting_round(await self.ledger.chain(request_id))
        if waiting is not None:
            found = await self.find(waiting)
            if found.pending:
                await self.decide(found, verdict="cancel", reason=reason, actor=actor)
        return Cancelling(request_id)

    async def refuse(self, found: Round, why: str, actor: Actor) -> None:
        """Record an attempt that reached a known round and was turned away."""
        await self.ledger.append(
            found.record.request_id,
            "refused",
            {"round_id": found.round_id, "why": why, **_actor(actor)},
        )

    async def note(self, found: Round, kind: str, data: dict[str, Any]) -> None:
        """Record something a channel saw that decided nothing (an unclear reply, a link
        opened)."""
        await self.ledger.append(
            found.record.request_id, kind, {"round_id": found.round_id, **data}
        )

    async def _late(
        self, found: Round, stored: Decision | None, state: str, actor: Actor
    ) -> Outcome:
        request_id = found.record.request_id
        mine = actor.channel_id
        if stored is not None and mine is not None and stored.evidence.get("message_id") == mine:
            return Duplicate(request_id, stored)
        await self.refuse(found, late_why(stored), actor)
        return AlreadyDecided(request_id, stored, state)


def addressed(found: Round) -> list[str]:
    """Who ``found`` is addressed to now."""
    return votes.addressees(found.record.request, found.record.chain.events, found.round_id)


def replace_chain(found: Round, chain: Chain) -> Round:
    return replace(found, record=replace(found.record, chain=chain))


def late_why(stored: Decision | None) -> str:
    """Why an answer came too late, in one word the trail and the transports share."""
    if stored is not None and stored.via == "expiry":
        return "expired"
    if stored is not None and stored.verdict == "cancel":
        return "cancelled"
    return "already decided"


def waiting_round(chain: Chain) -> str | None:
    """The round that was asked and is not decided yet, by the trail."""
    decided = {e.data.get("round_id") for e in chain.events if e.kind == "decided"}
    asked = [e.data["round_id"] for e in chain.events if e.kind == "asked"]
    return next((r for r in reversed(asked) if r not in decided), None)


def cancellation(chain: Chain) -> dict[str, Any] | None:
    """The recorded request to cancel, if any."""
    found = chain.keyed("cancel_requested")
    return found.data if found is not None else None


def _actor(actor: Actor) -> dict[str, Any]:
    return {"by": actor.by, "via": actor.via, "evidence": actor.evidence}
