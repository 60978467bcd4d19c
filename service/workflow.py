"""The approval flow on one screen, and the only module that makes durable calls.

``approval`` is a Resonate workflow: the download runs outside ``ctx.run`` (not checkpointed,
re-run on every replay, cheap because the page cache answers), every other step is a
checkpointed ``ctx.run``, and each round suspends on a durable promise that the gateway, the
CLI or the mail listener resolves with a ``Decision``. The ``*_step`` adapters take the
``Context`` that ``ctx.run`` passes first and call plain step functions that know nothing of
Resonate.
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

from service import tokens
from service.domain import WORKFLOW_NAME, Ask, Decision, Summary
from service.errors import Permanent
from service.metrics import Metrics
from service.pagecache import PageCache
from service.progress import Progress
from service.status import RequestView, RoundView
from service.steps.fetch import Fetcher
from service.steps.notify import Notifier
from service.steps.summarize import Summarizer

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

    def decide_url(self, promise_id: str, approver: str, now_ms: int) -> str:
        token = tokens.mint(promise_id, approver, secrets=self.secrets, now_ms=now_ms)
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
    progress: Progress
    metrics: Metrics
    round_timeout: timedelta
    clock: Callable[[], int]
    close_round: Callable[[str, str], Awaitable[object]]


async def approval(ctx: Context, request: dict[str, Any]) -> dict[str, Any]:
    deps = ctx.get_dependency(Deps)
    request_id = ctx.info.id
    rounds: list[RoundView] = []
    try:
        page = await download(deps, request_id, request["url"])
        previous: str | None = None
        reason: str | None = None
        first_promise: str | None = None
        while True:
            number = len(rounds) + 1
            summary = Summary.from_value(
                await ctx.run(summarize_step, request_id, page, previous, reason)
            )
            decision_future = ctx.promise(timeout=deps.round_timeout)
            promise_id = await decision_future.id()
            first_promise = first_promise or promise_id
            try:
                asked = await ctx.run(
                    ask_step,
                    request,
                    request_id,
                    promise_id,
                    first_promise,
                    number,
                    summary,
                    reason,
                )
            except Permanent as exc:
                await ctx.run(close_round_step, promise_id, str(exc))
                with contextlib.suppress(Exception):
                    await decision_future
                raise
            decision = await _decision(decision_future, number)
            rounds.append(
                RoundView(
                    number=number,
                    summary=summary.text,
                    summarizer=summary.summarizer,
                    model=summary.model,
                    decision=decision.verdict,
                    reason=decision.reason,
                    by=decision.by,
                    via=decision.via,
                    decided_at=decision.at,
                    asked_at=asked["at"],
                    round_id=promise_id,
                )
            )
            if decision.verdict == "approve":
                break
            previous, reason = summary.text, decision.reason
    except Permanent as exc:
        outcome = _outcome(request_id, request, "failed", str(exc), rounds)
        await _finish(ctx, deps, request, request_id, outcome)
        raise
    last = rounds[-1]
    outcome = _outcome(
        request_id, request, "approved", f"approved by {last.by} via {last.via}", rounds
    )
    await _finish(ctx, deps, request, request_id, outcome)
    return outcome


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
    ctx: Context, request_id: str, page: Page, previous: str | None, reason: str | None
) -> dict[str, Any]:
    deps = ctx.get_dependency(Deps)
    if page.failure is not None:
        raise page.failure
    text = page.text or ""
    summary = await _noting(
        deps,
        request_id,
        "summarize",
        lambda: deps.summarizer.summarize(text, previous=previous, reason=reason),
    )
    return summary.to_value()


async def ask_step(
    ctx: Context,
    request: dict[str, Any],
    request_id: str,
    promise_id: str,
    first_promise_id: str,
    number: int,
    summary: Summary,
    previous_reason: str | None,
) -> dict[str, Any]:
    deps = ctx.get_dependency(Deps)
    now = deps.clock()
    ask = Ask(
        request_id=request_id,
        promise_id=promise_id,
        first_promise_id=first_promise_id,
        round=number,
        url=request["url"],
        approver=request["approver"],
        summary=summary.text,
        previous_reason=previous_reason,
        decide_url=deps.links.decide_url(promise_id, request["approver"], now),
        expires_at=now + int(deps.links.ttl_s * 1000),
    )
    outcome = "failed"
    try:
        await _noting(deps, request_id, "ask", lambda: deps.notifier.ask(ask))
        outcome = "sent"
    finally:
        deps.metrics.emails.labels(deps.notifier.name, outcome).inc()
    return {"kind": "asked", "at": now, "via": deps.notifier.name, "round": number}


async def close_round_step(ctx: Context, promise_id: str, why: str) -> dict[str, Any]:
    """A round that could not be asked will never be answered: settle it, so the workflow
    (which must not finish with an open child promise) can fail instead of waiting forever."""
    deps = ctx.get_dependency(Deps)
    await deps.close_round(promise_id, why)
    return {"kind": "closed", "at": deps.clock(), "why": why}


async def callback_step(
    ctx: Context, request_id: str, url: str, outcome: dict[str, Any]
) -> dict[str, Any]:
    """A callback that never lands is logged, not fatal: the decision itself stands.

    Delivery is at least once: a crash after the POST but before this step's checkpoint sends
    it again, so receivers deduplicate by request id and state.
    """
    deps = ctx.get_dependency(Deps)
    try:
        await _noting(deps, request_id, "callback", lambda: deps.callbacks.deliver(url, outcome))
    except Permanent as exc:
        logger.error("giving up on the callback for %s: %s", request_id, exc)
        return {"kind": "callback", "at": deps.clock(), "delivered": False, "error": str(exc)}
    return {"kind": "callback", "at": deps.clock(), "delivered": True}


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


async def _finish(
    ctx: Context,
    deps: Deps,
    request: dict[str, Any],
    request_id: str,
    outcome: dict[str, Any],
) -> None:
    if request.get("callback_url"):
        await ctx.run(callback_step, request_id, request["callback_url"], outcome)
    await ctx.run(finish_step, request_id, outcome["state"])


async def finish_step(ctx: Context, request_id: str, state: str) -> dict[str, Any]:
    """Checkpointed, so a replay after the end neither counts the outcome twice nor touches
    the cache again."""
    deps = ctx.get_dependency(Deps)
    await asyncio.to_thread(deps.pages.drop, request_id)
    deps.progress.clear(request_id)
    deps.metrics.requests.labels(state).inc()
    return {"kind": "finished", "at": deps.clock(), "state": state}


def _outcome(
    request_id: str,
    request: dict[str, Any],
    state: str,
    detail: str,
    rounds: list[RoundView],
) -> dict[str, Any]:
    view = RequestView(
        id=request_id,
        state="approved" if state == "approved" else "failed",
        url=request["url"],
        approver=request["approver"],
        detail=detail,
        created_at=int(request.get("submitted_at", 0)),
        rounds=rounds,
    )
    return view.to_json()


def register(resonate: Any) -> None:
    """Steps retry transient trouble themselves; a Permanent error must fail at once."""
    resonate.register(approval, name=WORKFLOW_NAME, retry_policy=Never())
