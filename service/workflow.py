"""The approval flow on one screen, and the only module that makes durable calls.

``approval`` is a Resonate workflow: the download runs outside ``ctx.run`` (not checkpointed,
re-run on every replay, cheap because the page cache answers), every other step is a
checkpointed ``ctx.run``, and each round suspends on a durable promise that the gateway, the
CLI or the mail listener settles with a ``Decision``. The ``*_step`` adapters take the
``Context`` that ``ctx.run`` passes first and call plain step functions that know nothing of
Resonate; each records its fact in the ledger under a key, so a step that runs again after a
crash finds its own record instead of summarizing or emailing a second time.

The SDK numbers a workflow's durable calls (``<id>:1``, ``<id>:2``, …), so a request waiting
under one sequence of calls must resume under the same one: ``VERSION`` goes up whenever that
sequence changes, new requests start on it, and ``service.workflow_v1`` keeps the previous
sequence registered for requests started by release 0.1 until they are done.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Protocol

from resonate.context import Context
from resonate.error import ApplicationError, ResonateTimeoutError
from resonate.retry import Never

from service import status, tokens
from service.decisions import Accepted, Actor, Decisions, cancellation
from service.domain import (
    WORKFLOW_NAME,
    Ask,
    Deadline,
    Decision,
    Notice,
    OnExpiry,
    Request,
    Summary,
)
from service.errors import Permanent
from service.ledger import Chain, Ledger, with_seal
from service.mail.compose import page_subject
from service.metrics import Metrics
from service.pagecache import PageCache
from service.progress import Progress
from service.steps.fetch import Fetcher
from service.steps.notify import Notifier
from service.steps.summarize import Feedback, Summarizer

logger = logging.getLogger(__name__)

VERSION = 2
WATCHER_NAME = "mailgate.deadline"
#: How long a deadline watcher outlives its deadline (its own timeout bounds its sleeps).
WATCHER_MARGIN = timedelta(days=1)

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


async def approval(ctx: Context, submitted: dict[str, Any]) -> dict[str, Any]:
    deps = ctx.get_dependency(Deps)
    request_id = ctx.info.id
    request = Request.from_value(submitted)
    history: list[dict[str, Any]] = []
    try:
        page = await download(deps, request_id, request.url)
        first_round: str | None = None
        number = 0
        while True:
            number += 1
            summary = await ctx.run(summarize_step, request_id, number, page, history)
            decision_future = ctx.promise(timeout=deps.round_timeout)
            round_id = await decision_future.id()
            first_round = first_round or round_id
            try:
                asked = await ctx.run(
                    ask_step, request_id, submitted, round_id, first_round, number, summary, history
                )
            except Permanent as exc:
                await ctx.run(close_round_step, round_id, str(exc))
                with contextlib.suppress(Exception):
                    await decision_future
                raise
            watcher = await _watch(ctx, request, request_id, round_id, first_round, number, asked)
            decision = await _decision(decision_future, number)
            await ctx.run(record_decision_step, request_id, number, round_id, decision.to_value())
            if watcher is not None:
                await ctx.run(stop_watcher_step, watcher)
            if decision.ends_request:
                break
            history.append(Feedback(summary["text"], decision.reason, decision.by).to_value())
        ended = decision.to_value()
        state, detail = status.ending_state(ended), status.ended_by(ended)
        tell = decision.via == "expiry" or decision.verdict == "cancel"
    except Permanent as exc:
        state, detail, tell = "failed", str(exc), False
    outcome = await ctx.run(finish_step, request_id, state, detail, tell)
    if request.callback_url:
        outcome = await ctx.run(callback_step, request_id, request.callback_url, outcome)
    return outcome


async def _watch(
    ctx: Context,
    request: Request,
    request_id: str,
    round_id: str,
    first_round: str,
    number: int,
    asked: dict[str, Any],
) -> str | None:
    """Start the round's deadline watcher: a workflow of its own that sleeps until each
    reminder and the deadline, while this one waits on the round's promise (a workflow cannot
    wait for the first of two futures). Its timeout outlives the deadline, which also bounds
    its sleeps; the round's promise outlives both, so only the clock — through
    ``decisions`` — ends a round at its deadline."""
    if request.deadline is None or asked.get("cancelled"):
        return None
    lifetime = timedelta(milliseconds=request.deadline.expires_in_ms) + WATCHER_MARGIN
    return await ctx.options(timeout=lifetime).detached(
        WATCHER_NAME,
        request_id,
        round_id,
        first_round,
        number,
        int(asked["asked_at"]),
        request.deadline.to_value(),
    )


async def deadline(
    ctx: Context,
    request_id: str,
    round_id: str,
    first_round: str,
    number: int,
    asked_at: int,
    schedule: dict[str, Any],
) -> dict[str, Any]:
    """The deadline watcher of one round: remind, then expire, unless the round is decided
    first (its workflow then cancels this one; a step that still runs finds the round settled
    and does nothing). Reminders overdue when it wakes (every worker was down) collapse into
    the newest one: the approver gets one reminder, not a burst."""
    plan = Deadline.from_value(schedule)
    assert plan is not None
    deadline_at = asked_at + plan.expires_in_ms
    now = await ctx.run(clock_step)
    reminders = list(enumerate(plan.reminders(asked_at), start=1))
    due = [r for r in reminders if r[1] <= now]
    for k, at in due[-1:] + [r for r in reminders if r[1] > now]:
        if at > now:
            await ctx.sleep(timedelta(milliseconds=at - now))
            now = at
        await ctx.run(remind_step, request_id, round_id, first_round, number, k, deadline_at)
    if deadline_at > now:
        await ctx.sleep(timedelta(milliseconds=deadline_at - now))
    await ctx.run(expire_step, round_id, deadline_at, plan.on_expiry)
    return {"round_id": round_id, "deadline_at": deadline_at}


async def _decision(future: Awaitable[Any], number: int) -> Decision:
    """A round ends with a decision; anything else (timed out, settled by hand with a foreign
    value) ends the request as failed, with its callback, rather than leaving it hanging."""
    try:
        return Decision.from_value(await future)
    except (ApplicationError, ResonateTimeoutError, ValueError) as exc:
        raise Permanent(f"round {number} ended without a decision: {exc}") from exc


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


async def summarize_step(
    ctx: Context, request_id: str, number: int, page: Page, history: list[dict[str, Any]]
) -> dict[str, Any]:
    """``history`` holds every earlier round's summary and the reason it was rejected for."""
    deps = ctx.get_dependency(Deps)
    feedback = [Feedback.from_value(h) for h in history]
    return await summarize(deps, request_id, number, page, feedback)


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


async def ask_step(
    ctx: Context,
    request_id: str,
    submitted: dict[str, Any],
    round_id: str,
    first_round: str,
    number: int,
    summary: dict[str, Any],
    history: list[dict[str, Any]],
) -> dict[str, Any]:
    deps = ctx.get_dependency(Deps)
    previous = Feedback.from_value(history[-1]).reason if history else None
    return await ask(
        deps,
        Request.from_value(submitted),
        request_id,
        round_id,
        first_round,
        number,
        Summary.from_value(summary),
        previous,
    )


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
    """Email (or print) the round once: an ``asked`` record means it already went out. A
    cancellation recorded before or during the sending ends the round here (see
    ``Decisions.cancel`` for why both checks are needed)."""
    chain = await deps.ledger.chain(request_id)
    key = f"asked:{round_id}"
    if (done := chain.keyed(key)) is not None:
        return done.data
    if await _cancelled(deps, chain, round_id):
        return {"round": number, "round_id": round_id, "cancelled": True}
    now = deps.clock()
    expires_at = now + request.deadline.expires_in_ms if request.deadline else None
    request_ask = Ask(
        request_id=request_id,
        promise_id=round_id,
        first_promise_id=first_round,
        round=number,
        url=request.url,
        approver=request.approver,
        summary=summary.text,
        previous_reason=previous_reason,
        decide_url=deps.links.decide_url(round_id, request.approver, now),
        expires_at=expires_at,
        issued_at=now,
    )
    outcome = "failed"
    try:
        message_id = await _noting(deps, request_id, "ask", lambda: deps.notifier.ask(request_ask))
        outcome = "sent"
    finally:
        deps.metrics.emails.labels(deps.notifier.name, outcome).inc()
    data = {
        "round": number,
        "round_id": round_id,
        "channel": deps.notifier.name,
        "recipient": request.approver,
        "message_id": message_id,
        "asked_at": now,
        "deadline_at": expires_at,
    }
    await deps.ledger.append(request_id, "asked", data, key=key, chain=chain)
    await _cancelled(deps, await deps.ledger.chain(request_id), round_id)
    return data


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


async def remind_step(
    ctx: Context,
    request_id: str,
    round_id: str,
    first_round: str,
    number: int,
    reminder: int,
    deadline_at: int,
) -> dict[str, Any]:
    deps = ctx.get_dependency(Deps)
    return await remind(deps, request_id, round_id, first_round, number, reminder, deadline_at)


async def remind(
    deps: Deps,
    request_id: str,
    round_id: str,
    first_round: str,
    number: int,
    reminder: int,
    deadline_at: int,
) -> dict[str, Any]:
    """The round's request again, in its thread, saying when it expires; once per reminder
    (a ``reminded`` record means it went out), and never for a round already decided."""
    found = await deps.decisions.find(round_id)
    if not found.pending:
        return {"skipped": "decided"}
    chain = found.record.chain
    key = f"reminded:{round_id}:{reminder}"
    if (done := chain.keyed(key)) is not None:
        return done.data
    request = found.record.request
    summary = chain.keyed(f"summarized:{number}")
    asked = chain.keyed(f"asked:{round_id}")
    rejected = [e for e in chain.events if e.kind == "decided" and e.data["round"] == number - 1]
    issued = int(asked.data["asked_at"]) if asked else deps.clock()
    reminder_ask = Ask(
        request_id=request_id,
        promise_id=round_id,
        first_promise_id=first_round,
        round=number,
        url=request.url,
        approver=request.approver,
        summary=summary.data["text"] if summary else "",
        previous_reason=rejected[-1].data.get("reason") if rejected else None,
        decide_url=deps.links.decide_url(round_id, request.approver, issued),
        expires_at=deadline_at,
        reminder=reminder,
        issued_at=issued,
    )
    message_id = await _noting(deps, request_id, "remind", lambda: deps.notifier.ask(reminder_ask))
    deps.metrics.reminders.inc()
    data = {"round": number, "round_id": round_id, "reminder": reminder, "message_id": message_id}
    await deps.ledger.append(request_id, "reminded", data, key=key, chain=chain)
    return data


async def expire_step(
    ctx: Context, round_id: str, deadline_at: int, on_expiry: OnExpiry
) -> dict[str, Any]:
    """Settle a round nobody decided by its deadline (a no-op when someone did)."""
    deps = ctx.get_dependency(Deps)
    found = await deps.decisions.find(round_id)
    if not found.pending:
        return {"expired": False}
    outcome = await deps.decisions.expire(found, on_expiry, deadline_at)
    return {"expired": isinstance(outcome, Accepted)}


async def stop_watcher_step(ctx: Context, watcher_id: str) -> dict[str, Any]:
    """A decided round's deadline watcher must not fire: stop it."""
    deps = ctx.get_dependency(Deps)
    await deps.ledger.stop_watcher(watcher_id)
    return {"stopped": watcher_id}


async def clock_step(ctx: Context) -> int:
    """Now, checkpointed: a replay computes the same sleeps."""
    return ctx.get_dependency(Deps).clock()


async def record_decision_step(
    ctx: Context, request_id: str, number: int, round_id: str, decision: dict[str, Any]
) -> dict[str, Any]:
    """The decider records its decision as it settles the round; this covers a decider that
    died in between, so the trail never misses a decision the workflow acted on."""
    deps = ctx.get_dependency(Deps)
    event = await deps.ledger.append(
        request_id,
        "decided",
        decided(number, round_id, Decision.from_value(decision)),
        key=f"decided:{round_id}",
    )
    return {"seq": event.seq}


def decided(number: int, round_id: str, decision: Decision) -> dict[str, Any]:
    """The ``decided`` event's data: the decision as settled, with its evidence and seal."""
    return {"round": number, "round_id": round_id, **decision.to_value()}


async def close_round_step(ctx: Context, round_id: str, why: str) -> dict[str, Any]:
    """A round that could not be asked will never be answered: settle it, so the workflow
    (which must not finish with an open child promise) can fail instead of waiting forever."""
    deps = ctx.get_dependency(Deps)
    await deps.ledger.close_round(round_id, why)
    return {"kind": "closed", "at": deps.clock(), "why": why}


async def finish_step(
    ctx: Context, request_id: str, state: str, detail: str, tell: bool = False
) -> dict[str, Any]:
    """``tell``: the request ended without its approver (the deadline, a cancellation)."""
    deps = ctx.get_dependency(Deps)
    outcome = await conclude(deps, request_id, state, detail)
    if tell:
        await tell_approver(deps, request_id, detail)
    await tidy(deps, request_id, state)
    return outcome


async def tell_approver(deps: Deps, request_id: str, detail: str) -> None:
    """A short note in the round's thread when the request ended without the approver: their
    links and reply address stop deciding, and they should know why. Once (a ``told``
    record); nothing when no round was ever sent to them."""
    record = await deps.ledger.read(request_id)
    if record is None or record.chain.keyed("told") is not None:
        return
    asked = [e for e in record.chain.events if e.kind == "asked"]
    if not asked:
        return
    round_id = asked[-1].data["round_id"]
    notice = Notice(
        request_id=request_id,
        round_id=round_id,
        to=record.request.approver,
        kind="ended",
        subject=page_subject("[Mailgate] No longer waiting: ", record.request.url),
        text=(
            f"The request to approve the summary of {record.request.url} is {detail}.\n"
            "Its links and reply address no longer decide anything; nothing is needed from "
            "you."
        ),
    )
    await _noting(deps, request_id, "tell", lambda: deps.notifier.tell(notice))
    await deps.ledger.append(request_id, "told", {"kind": "ended", "to": notice.to}, key="told")


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


async def callback_step(
    ctx: Context, request_id: str, url: str, outcome: dict[str, Any]
) -> dict[str, Any]:
    deps = ctx.get_dependency(Deps)
    return await callback(deps, request_id, url, outcome)


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


def register(resonate: Any) -> None:
    """Every version with requests that may still wait; steps retry transient trouble
    themselves, so a Permanent error must fail at once."""
    from service import workflow_v1

    resonate.register(workflow_v1.approval, name=WORKFLOW_NAME, version=1, retry_policy=Never())
    resonate.register(approval, name=WORKFLOW_NAME, version=VERSION, retry_policy=Never())
    resonate.register(deadline, name=WATCHER_NAME, version=1, retry_policy=Never())
