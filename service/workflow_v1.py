"""Release 0.1's durable call sequence, kept so requests it started finish after an upgrade.

The SDK matches a replay to its checkpoints by position only (``<id>:1``, ``<id>:2``, …; a local
step's arguments are never stored), so this body makes exactly the calls release 0.1 made, in
the same order: summarize, round promise, ask (close on failure), per round; then the callback
(when asked for) and a last step. What each step *does* is today's (``service.workflow``), so
these requests get an audit trail and the same outcome as new ones. Delete this module, and
its registration, once no version 1 request can still be waiting (``mailgate status`` lists
none older than the release that dropped it).
"""

from __future__ import annotations

import contextlib
from typing import Any

from resonate.context import Context

from service import status
from service.domain import Request
from service.errors import Permanent
from service.steps.summarize import Feedback
from service.workflow import (
    Deps,
    _decision,
    ask_step,
    callback_step,
    close_round_step,
    conclude,
    download,
    summarize_step,
    tidy,
)


async def approval(ctx: Context, submitted: dict[str, Any]) -> dict[str, Any]:
    deps = ctx.get_dependency(Deps)
    request_id = ctx.info.id
    request = Request.from_value(submitted)
    history: list[dict[str, Any]] = []
    failure: Permanent | None = None
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
                await ctx.run(
                    ask_step, request_id, submitted, round_id, first_round, number, summary, history
                )
            except Permanent as exc:
                await ctx.run(close_round_step, round_id, str(exc))
                with contextlib.suppress(Exception):
                    await decision_future
                raise
            decision = await _decision(decision_future, number)
            if decision.verdict == "approve":
                break
            history.append(Feedback(summary["text"], decision.reason, decision.by).to_value())
        state, detail = "approved", status.ended_by(decision.to_value())
    except Permanent as exc:
        failure, state, detail = exc, "failed", str(exc)
    outcome = await conclude(deps, request_id, state, detail)
    if request.callback_url:
        outcome = await ctx.run(callback_step, request_id, request.callback_url, outcome)
    await ctx.run(last_step, request_id, state)
    if failure is not None:
        raise failure
    return outcome


async def last_step(ctx: Context, request_id: str, state: str) -> dict[str, Any]:
    """Release 0.1's ``finish_step`` slot."""
    deps = ctx.get_dependency(Deps)
    await tidy(deps, request_id, state)
    return {"kind": "finished", "at": deps.clock(), "state": state}
