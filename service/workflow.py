"""The approval flow on one screen, and the only module that makes durable calls.

``approval`` is a Resonate workflow: the download runs outside ``ctx.run`` (not checkpointed,
re-run on every replay, cheap because the page cache answers), every other step is a
checkpointed ``ctx.run``, and each round suspends on a durable promise that the gateway, the
CLI or the mail listener settles with a ``Decision``. The ``*_step`` adapters take the
``Context`` that ``ctx.run`` passes first and call ``service.rounds``, which does the work and
records each fact in the ledger under a key, so a step that runs again after a crash finds its
own record instead of summarizing or emailing a second time. ``deadline`` is the watcher each
round with a deadline gets, and ``delegation`` the job that emails a delegate.

The SDK numbers a workflow's durable calls (``<id>:1``, ``<id>:2``, …), so a request waiting
under one sequence of calls must resume under the same one: ``VERSION`` goes up whenever that
sequence changes, new requests start on it, and ``service.workflow_v1`` keeps the previous
sequence registered for requests started by release 0.1 until they are done.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any

from resonate.context import Context
from resonate.error import ApplicationError, ResonateTimeoutError
from resonate.retry import Never

from service import rounds, status
from service.decisions import (
    DELEGATION_JOB,
)
from service.domain import (
    WORKFLOW_NAME,
    Deadline,
    Decision,
    OnExpiry,
    Request,
    Summary,
)
from service.errors import Permanent
from service.rounds import Deps
from service.steps.summarize import Feedback

logger = logging.getLogger(__name__)

VERSION = 2


WATCHER_NAME = "mailgate.deadline"


#: How long a deadline watcher outlives its deadline (its own timeout bounds its sleeps).
WATCHER_MARGIN = timedelta(days=1)


async def approval(ctx: Context, submitted: dict[str, Any]) -> dict[str, Any]:
    deps = ctx.get_dependency(Deps)
    request_id = ctx.info.id
    request = Request.from_value(submitted)
    history: list[dict[str, Any]] = []
    try:
        page = await rounds.download(deps, request_id, request.url)
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
    escalate_after = request.escalate_after_ms if request.escalate_to else None
    return await ctx.options(timeout=lifetime).detached(
        WATCHER_NAME,
        request_id,
        round_id,
        first_round,
        number,
        int(asked["asked_at"]),
        request.deadline.to_value(),
        escalate_after,
    )


async def deadline(
    ctx: Context,
    request_id: str,
    round_id: str,
    first_round: str,
    number: int,
    asked_at: int,
    schedule: dict[str, Any],
    escalate_after_ms: int | None = None,
) -> dict[str, Any]:
    """The deadline watcher of one round: remind (and escalate, when the request names
    escalation contacts), then expire, unless the round is decided first (its workflow then
    cancels this one; a step that still runs finds the round settled and does nothing).
    Reminders overdue when it wakes (every worker was down) collapse into the newest one: the
    approver gets one reminder, not a burst."""
    plan = Deadline.from_value(schedule)
    assert plan is not None
    deadline_at = asked_at + plan.expires_in_ms
    now = await ctx.run(clock_step)
    reminders = [(at, k) for k, at in enumerate(plan.reminders(asked_at), start=1)]
    overdue = [r for r in reminders if r[0] <= now]
    timeline = overdue[-1:] + [r for r in reminders if r[0] > now]
    if escalate_after_ms is not None:
        timeline.append((asked_at + escalate_after_ms, 0))
    for at, k in sorted(timeline):
        if at > now:
            await ctx.sleep(timedelta(milliseconds=at - now))
            now = at
        if k == 0:
            await ctx.run(escalate_step, request_id, round_id, first_round, number)
        else:
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


async def summarize_step(
    ctx: Context, request_id: str, number: int, page: rounds.Page, history: list[dict[str, Any]]
) -> dict[str, Any]:
    """``history`` holds every earlier round's summary and the reason it was rejected for."""
    deps = ctx.get_dependency(Deps)
    feedback = [Feedback.from_value(h) for h in history]
    return await rounds.summarize(deps, request_id, number, page, feedback)


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
    return await rounds.ask(
        deps,
        Request.from_value(submitted),
        request_id,
        round_id,
        first_round,
        number,
        Summary.from_value(summary),
        previous,
    )


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
    return await rounds.remind(
        deps, request_id, round_id, first_round, number, reminder, deadline_at
    )


async def escalate_step(
    ctx: Context, request_id: str, round_id: str, first_round: str, number: int
) -> dict[str, Any]:
    deps = ctx.get_dependency(Deps)
    return await rounds.escalate(deps, request_id, round_id, first_round, number)


async def delegation(ctx: Context, request_id: str, round_id: str, to: str) -> dict[str, Any]:
    """A worker job (``Decisions.delegate`` starts it): email the delegate their own copy of
    the round they were handed."""
    return await ctx.run(forward_step, request_id, round_id, to)


async def forward_step(ctx: Context, request_id: str, round_id: str, to: str) -> dict[str, Any]:
    return await rounds.forward(ctx.get_dependency(Deps), request_id, round_id, to)


async def expire_step(
    ctx: Context, round_id: str, deadline_at: int, on_expiry: OnExpiry
) -> dict[str, Any]:
    return await rounds.expire(ctx.get_dependency(Deps), round_id, deadline_at, on_expiry)


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
    settled = Decision.from_value(decision)
    return await rounds.record_decision(
        ctx.get_dependency(Deps), request_id, number, round_id, settled
    )


async def close_round_step(ctx: Context, round_id: str, why: str) -> dict[str, Any]:
    """A round that could not be asked will never be answered: settle it, so the workflow
    (which must not finish with an open child promise) can fail instead of waiting forever."""
    deps = ctx.get_dependency(Deps)
    await deps.ledger.close_round(round_id, why)
    return {"kind": "closed", "at": deps.clock(), "why": why}


async def finish_step(
    ctx: Context, request_id: str, state: str, detail: str, tell: bool = False
) -> dict[str, Any]:
    return await rounds.finish(ctx.get_dependency(Deps), request_id, state, detail, tell)


async def callback_step(
    ctx: Context, request_id: str, url: str, outcome: dict[str, Any]
) -> dict[str, Any]:
    deps = ctx.get_dependency(Deps)
    return await rounds.callback(deps, request_id, url, outcome)


def register(resonate: Any) -> None:
    """Every version with requests that may still wait; steps retry transient trouble
    themselves, so a Permanent error must fail at once."""
    from service import workflow_v1

    resonate.register(workflow_v1.approval, name=WORKFLOW_NAME, version=1, retry_policy=Never())
    resonate.register(approval, name=WORKFLOW_NAME, version=VERSION, retry_policy=Never())
    resonate.register(deadline, name=WATCHER_NAME, version=1, retry_policy=Never())
    resonate.register(delegation, name=DELEGATION_JOB, version=1, retry_policy=Never())
