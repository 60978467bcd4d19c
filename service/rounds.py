"""What each step of a round does, and the record it leaves in the ledger.

The workflows (``service.workflow``) make the durable calls; the functions here are what those
calls run. Each records its fact in the ledger under a key and looks for that record first, so
a step that runs again after a crash finds its own record instead of summarizing or emailing a
second time. They know the ledger and the steps (fetch, summarize, notify), not Resonate.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from service import tokens, votes
from service.decisions import Accepted, Actor, Decisions, addressed, cancellation
from service.domain import Ask, Decision, Notice, OnExpiry, Request, Summary
from service.errors import Permanent
from service.ledger import Chain, Event, Ledger, Record, Round, with_seal
from service.mail.compose import page_subject
from service.metrics import Metrics
from service.pagecache import PageCache
from service.progress import Progress
from service.steps.fetch import Fetcher
from service.steps.notify import Notifier
from service.steps.summarize import Feedback, Summarizer

logger = logging.getLogger(__name__)

#: The request a step is working for, so retry notes land on the right status page.
current_request: contextvars.ContextVar[str] = contextvars.ContextVar("current_request")


class CallbackSender(Protocol):
    async def deliver(self, url: str, body: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class Links:
    public_url: str
    secrets: tuple[str, ...]
    ttl_s: float

    def decide_url(self, round_id: str, approver: str, now_ms: int) -> str:
        token = tokens.mint(round_id, approver, secrets=self.secrets, now_ms=now_ms)
        return f"{self.public_url.rstrip('/')}/decide/{token}"


@dataclass(frozen=True)
class Deps:
    """What the workflow needs from the outside world, chosen once in ``service.app``."""

    fetcher: Fetcher
    summarizer: Summarizer
    notifier: Notifier
    callbacks: CallbackSender
    pages: PageCache
    links: Links
    ledger: Ledger
    decisions: Decisions
    progress: Progress
    metrics: Metrics
    round_timeout: timedelta
    clock: Callable[[], int]


@dataclass(frozen=True)
class Page:
    """The downloaded text, or why it could not be had."""

    text: str | None
    failure: Permanent | None


async def download(deps: Deps, request_id: str, url: str) -> Page:
    """Not durable on purpose: the cache, keyed by workflow id, makes replays cheap.

    A failure is handed to the summarize step instead of raised here. On a first run that
    step executes and fails the request at once with the download's message; on a replay
    whose summaries are already checkpointed it never executes, so a page that has since
    gone away (or a worker without the cache) cannot fail a request a person already answered.
    """
    cached = await asyncio.to_thread(deps.pages.get, request_id)
    if cached is not None:
        return Page(cached, None)
    try:
        text = await _noting(deps, request_id, "download", lambda: deps.fetcher.fetch(url))
    except Permanent as exc:
        return Page(None, exc)
    await asyncio.to_thread(deps.pages.put, request_id, text)
    return Page(text, None)


async def summarize(
    deps: Deps, request_id: str, number: int, page: Page, history: list[Feedback]
) -> dict[str, Any]:
    chain = await deps.ledger.chain(request_id)
    key = f"summarized:{number}"
    if (done := chain.keyed(key)) is not None:
        return Summary.from_value(done.data).to_value()
    if page.failure is not None:
        raise page.failure
    text = page.text or ""
    if number == 1:
        await deps.ledger.append(request_id, "fetched", {"chars": len(text)}, key="fetched")
    summary = await _noting(
        deps, request_id, "summarize", lambda: deps.summarizer.summarize(text, history=history)
    )
    data = {"round": number, **summary.to_value()}
    await deps.ledger.append(request_id, "summarized", data, key=key)
    return summary.to_value()


async def ask(
    deps: Deps,
    request: Request,
    request_id: str,
    round_id: str,
    first_round: str,
    number: int,
    summary: Summary,
    previous_reason: str | None,
) -> dict[str, Any]:
    """Email (or print) the round to everyone it is addressed to, once: an ``asked`` record
    means it already went out. A cancellation recorded before or during the sending ends the
    round here (see ``Decisions.cancel`` for why both checks are needed)."""
    chain = await deps.ledger.chain(request_id)
    key = f"asked:{round_id}"
    if (done := chain.keyed(key)) is not None:
        return done.data
    if await _cancelled(deps, chain, round_id):
        return {"round": number, "round_id": round_id, "cancelled": True}
    now = deps.clock()
    expires_at = now + request.deadline.expires_in_ms if request.deadline else None
    recipients = votes.addressees(request, chain.events, round_id)
    letter = Letter(
        request_id, round_id, first_round, number, summary.text, previous_reason, now, expires_at
    )
    sent = await _send(deps, request, chain, letter, recipients)
    data = {
        "round": number,
        "round_id": round_id,
        "channel": deps.notifier.name,
        "recipient": recipients[0],
        "message_id": sent[recipients[0]],
        "recipients": recipients,
        "message_ids": sent,
        "asked_at": now,
        "deadline_at": expires_at,
    }
    await deps.ledger.append(request_id, "asked", data, key=key, chain=chain)
    await _cancelled(deps, await deps.ledger.chain(request_id), round_id)
    return data


@dataclass(frozen=True)
class Letter:
    """One round as every copy of it says it: what is asked, and since and until when."""

    request_id: str
    round_id: str
    first_round: str
    number: int
    summary: str
    previous_reason: str | None
    issued_at: int
    deadline_at: int | None
    reminder: int = 0


async def _send(
    deps: Deps, request: Request, chain: Chain, letter: Letter, recipients: list[str]
) -> dict[str, str | None]:
    """A copy of the round to each recipient, with their own links and reply address (signed as
    of the round's first sending, so a reminder carries the very same ones)."""
    everyone = votes.people(request, chain.events)
    sent: dict[str, str | None] = {}
    for address in recipients:
        copy = Ask(
            request_id=letter.request_id,
            promise_id=letter.round_id,
            first_promise_id=letter.first_round,
            round=letter.number,
            url=request.url,
            approver=address,
            summary=letter.summary,
            previous_reason=letter.previous_reason,
            decide_url=deps.links.decide_url(letter.round_id, address, letter.issued_at),
            expires_at=letter.deadline_at,
            reminder=letter.reminder,
            issued_at=letter.issued_at,
            recipient=everyone.index(address),
        )
        outcome = "failed"
        try:
            step = "remind" if letter.reminder else "ask"
            sent[address] = await _noting(
                deps, letter.request_id, step, lambda copy=copy: deps.notifier.ask(copy)
            )
            outcome = "sent"
        finally:
            deps.metrics.emails.labels(deps.notifier.name, outcome).inc()
    return sent


async def _cancelled(deps: Deps, chain: Chain, round_id: str) -> bool:
    """End the round with the recorded cancellation, if there is one."""
    asked_to_stop = cancellation(chain)
    if asked_to_stop is None:
        return False
    found = await deps.decisions.find(round_id)
    if found.pending:
        actor = Actor(
            asked_to_stop["by"], asked_to_stop["via"], dict(asked_to_stop.get("evidence") or {})
        )
        reason = asked_to_stop.get("reason")
        await deps.decisions.decide(found, verdict="cancel", reason=reason, actor=actor)
    return True


async def remind(
    deps: Deps,
    request_id: str,
    round_id: str,
    first_round: str,
    number: int,
    reminder: int,
    deadline_at: int,
) -> dict[str, Any]:
    """The round's request again, in each recipient's thread, saying when it expires, to
    everyone it is addressed to who has not answered; once per reminder (a ``reminded``
    record means it went out), and never for a round already decided."""
    key = f"reminded:{round_id}:{reminder}"
    found, done = await _open(deps, round_id, key)
    if found is None:
        return done
    chain = found.record.chain
    request = found.record.request
    answered = {v.voter for v in votes.votes(chain.events, round_id)}
    waiting = [a for a in addressed(found) if a not in answered]
    sent = await _send(
        deps, request, chain, _letter(found, first_round, number, reminder, deadline_at), waiting
    )
    deps.metrics.reminders.inc(len(sent))
    data = {
        "round": number,
        "round_id": round_id,
        "reminder": reminder,
        "recipients": waiting,
        "message_ids": sent,
        "message_id": next(iter(sent.values()), None),
    }
    await deps.ledger.append(request_id, "reminded", data, key=key, chain=chain)
    return data


async def _open(deps: Deps, round_id: str, key: str) -> tuple[Round | None, dict[str, Any]]:
    """The round, when it still waits and the fact ``key`` is not recorded yet; otherwise
    None and what the step should return (the recorded fact, or that there is nothing to do)."""
    found = await deps.decisions.find(round_id)
    if not found.pending:
        return None, {"skipped": "decided"}
    done = found.record.chain.keyed(key)
    if done is not None:
        return None, done.data
    return found, {}


def _letter(
    found: Round, first_round: str, number: int, reminder: int, deadline_at: int | None
) -> Letter:
    """The round as it was first sent, read back from the trail."""
    chain = found.record.chain
    summary = chain.keyed(f"summarized:{number}")
    asked = chain.keyed(f"asked:{found.round_id}")
    rejected = [e for e in chain.events if e.kind == "decided" and e.data["round"] == number - 1]
    return Letter(
        found.record.request_id,
        found.round_id,
        first_round,
        number,
        summary.data["text"] if summary else "",
        rejected[-1].data.get("reason") if rejected else None,
        int(asked.data["asked_at"]) if asked else found.record.chain.events[-1].at,
        deadline_at,
        reminder,
    )


async def escalate(
    deps: Deps, request_id: str, round_id: str, first_round: str, number: int
) -> dict[str, Any]:
    """Offer a round nobody has decided yet to the escalation contacts too, each with their own
    email, links and reply address; once (an ``escalated`` record)."""
    key = f"escalated:{round_id}"
    found, done = await _open(deps, round_id, key)
    if found is None:
        return done
    chain = found.record.chain
    request = found.record.request
    contacts = [a for a in request.escalate_to if a not in addressed(found)]
    asked = chain.keyed(f"asked:{round_id}")
    deadline_at = asked.data.get("deadline_at") if asked else None
    data = {"round": number, "round_id": round_id, "to": contacts}
    await deps.ledger.append(request_id, "escalated", data, key=key, chain=chain)
    chain = await deps.ledger.chain(request_id)
    letter = _letter(found, first_round, number, 0, deadline_at)
    sent = await _send(deps, request, chain, letter, contacts)
    return {**data, "message_ids": sent}


def _first_round(events: Sequence[Event]) -> str | None:
    return next((e.data["round_id"] for e in events if e.kind == "asked"), None)


async def forward(deps: Deps, request_id: str, round_id: str, to: str) -> dict[str, Any]:
    """Email a delegate their own copy of the round they were handed; once."""
    key = f"forwarded:{round_id}:{to}"
    found, done = await _open(deps, round_id, key)
    if found is None:
        return done
    chain = found.record.chain
    asked = chain.keyed(f"asked:{round_id}")
    first_round = _first_round(chain.events) or round_id
    letter = _letter(
        found, first_round, found.number, 0, asked.data.get("deadline_at") if asked else None
    )
    sent = await _send(deps, found.record.request, chain, letter, [to])
    data = {"round": found.number, "round_id": round_id, "to": to, "message_id": sent[to]}
    await deps.ledger.append(request_id, "forwarded", data, key=key, chain=chain)
    return data


async def expire(
    deps: Deps, round_id: str, deadline_at: int, on_expiry: OnExpiry
) -> dict[str, Any]:
    """Settle a round nobody decided by its deadline (a no-op when someone did)."""
    found = await deps.decisions.find(round_id)
    if not found.pending:
        return {"expired": False}
    outcome = await deps.decisions.expire(found, on_expiry, deadline_at)
    return {"expired": isinstance(outcome, Accepted)}


async def record_decision(
    deps: Deps, request_id: str, number: int, round_id: str, settled: Decision
) -> dict[str, Any]:
    """The decider records its decision as it settles the round; this covers a decider that
    died in between, so the trail never misses a decision the workflow acted on. Everyone
    else the round was addressed to is told who decided it."""
    event = await deps.ledger.append(
        request_id,
        "decided",
        decided(number, round_id, settled),
        key=f"decided:{round_id}",
    )
    record = await deps.ledger.read(request_id)
    several = record is not None and len(addressed_in(record, round_id)) > 1
    if record is not None and several and settled.via != "expiry" and settled.verdict != "cancel":
        word = "approved" if settled.verdict == "approve" else "rejected"
        text = (
            f"Round {number} of the summary of {record.request.url} was {word} by "
            f"{settled.by}. Nothing is needed from you; your links and reply address for "
            "this round no longer decide anything."
        )
        await tell(deps, record, round_id, "decided", "[Mailgate] Decided: ", text)
    return {"seq": event.seq}


async def finish(
    deps: Deps, request_id: str, state: str, detail: str, told: bool
) -> dict[str, Any]:
    """``told``: the request ended without its approvers (the deadline, a cancellation)."""
    outcome = await conclude(deps, request_id, state, detail)
    if told:
        await tell_approver(deps, request_id, detail)
    await tidy(deps, request_id, state)
    return outcome


def decided(number: int, round_id: str, decision: Decision) -> dict[str, Any]:
    """The ``decided`` event's data: the decision as settled, with its evidence and seal."""
    return {"round": number, "round_id": round_id, **decision.to_value()}


async def tell_approver(deps: Deps, request_id: str, detail: str) -> None:
    """A short note in the round's thread when the request ended without its approvers (the
    deadline, a cancellation): their links and reply addresses stop deciding, and they should
    know why. Nothing when no round was ever sent."""
    record = await deps.ledger.read(request_id)
    if record is None:
        return
    asked = [e for e in record.chain.events if e.kind == "asked"]
    if not asked:
        return
    round_id = asked[-1].data["round_id"]
    text = (
        f"The request to approve the summary of {record.request.url} is {detail}.\n"
        "Its links and reply address no longer decide anything; nothing is needed from you."
    )
    await tell(deps, record, round_id, "ended", "[Mailgate] No longer waiting: ", text)


def addressed_in(record: Record, round_id: str) -> list[str]:
    return votes.addressees(record.request, record.chain.events, round_id)


async def tell(
    deps: Deps, record: Record, round_id: str, kind: str, subject: str, text: str
) -> None:
    """Send a note about a round to everyone it was addressed to who had not answered, each
    in their own thread; once per round and kind (a ``told`` record)."""
    chain = record.chain
    key = f"told:{kind}:{round_id}"
    if chain.keyed(key) is not None:
        return
    request = record.request
    answered = {v.voter for v in votes.votes(chain.events, round_id)}
    decided = chain.keyed(f"decided:{round_id}")
    by = {b.strip() for b in str(decided.data.get("by", "")).split(",")} if decided else set()
    recipients = [
        a
        for a in votes.addressees(request, chain.events, round_id)
        if a not in answered and a not in by
    ]
    if not recipients:
        return
    everyone = votes.people(request, chain.events)
    for address in recipients:
        notice = Notice(
            request_id=record.request_id,
            round_id=round_id,
            to=address,
            kind=kind,
            subject=page_subject(subject, request.url),
            text=text,
            recipient=everyone.index(address),
        )
        await _noting(deps, record.request_id, "tell", lambda n=notice: deps.notifier.tell(n))
    await deps.ledger.append(
        record.request_id,
        "told",
        {"kind": kind, "round_id": round_id, "to": recipients},
        key=key,
        chain=chain,
    )


async def conclude(deps: Deps, request_id: str, state: str, detail: str) -> dict[str, Any]:
    """Record the end and build the outcome from the trail, as a status read would; its seal
    pins the trail's head so dropping the newest events is detected. Idempotent."""
    await deps.ledger.append(
        request_id, "finished", {"state": state, "detail": detail}, key="finished"
    )
    record = await deps.ledger.read(request_id)
    if record is None:
        msg = f"{request_id} vanished while finishing"
        raise Permanent(msg)
    return with_seal(record.view().to_json(), record.seal)


async def tidy(deps: Deps, request_id: str, state: str) -> None:
    """Once per request (inside a checkpointed step): the cache and the count."""
    await asyncio.to_thread(deps.pages.drop, request_id)
    deps.progress.clear(request_id)
    deps.metrics.requests.labels(state).inc()


async def callback(
    deps: Deps, request_id: str, url: str, outcome: dict[str, Any]
) -> dict[str, Any]:
    """A callback that never lands is logged, not fatal: the decision itself stands.

    Delivery is at least once: a crash after the POST but before this step's checkpoint sends
    it again, so receivers deduplicate by request id and state.
    """
    body = {k: v for k, v in outcome.items() if k != "seal"}
    result: dict[str, Any] = {"url": url, "delivered": True}
    try:
        await _noting(deps, request_id, "callback", lambda: deps.callbacks.deliver(url, body))
    except Permanent as exc:
        logger.error("giving up on the callback for %s: %s", request_id, exc)
        result = {"url": url, "delivered": False, "error": str(exc)}
    event = await deps.ledger.append(request_id, "callback", result, key="callback")
    return with_seal(outcome, event.seal())


async def _noting[T](deps: Deps, request_id: str, step: str, work: Callable[[], Awaitable[T]]) -> T:
    """Run a step with its retry notes routed to this request; surprises become failures.

    A step retries what is worth retrying itself, so anything else that escapes it is turned
    into a ``Permanent`` error: the request then fails with a status that says why, and its
    callback still fires.
    """
    token = current_request.set(request_id)
    try:
        with deps.metrics.step_seconds.labels(step).time():
            return await work()
    except Permanent:
        raise
    except Exception as exc:
        logger.exception("step failed unexpectedly for %s", request_id)
        raise Permanent(f"internal error: {exc}") from exc
    finally:
        current_request.reset(token)
        deps.progress.clear(request_id)
