"""The read model: a request's status, rebuilt from its durable promises.

Everything a status page needs is already durable: the root promise holds the request (its
param) and its outcome, and the workflow's children — checkpointed summaries, the rounds'
decision promises, the ``asked`` checkpoints — sit under ids ``<request id>:<n>``. Reading
them through the public promise API keeps the status identical whether the engine is embedded,
served by ``mailgate engine``, or a Resonate Server.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from resonate.error import ServerError
from resonate.resonate import Resonate, default_resolve_target
from resonate.types import PromiseRecord

from service.domain import WORKER_GROUP, WORKFLOW_NAME, Decision, normalize_email, workflow_id
from service.progress import Progress
from service.status import RequestView, RoundView

#: Generations probed past the first when looking for the latest request of a pair.
MAX_GENERATIONS = 1000
#: Retention deletes a pair's oldest generations first, so the survivors may start above 1;
#: this many missing generations in a row mean there are none left.
MAX_RETIRED_RUN = 32


async def get_record(resonate: Resonate, promise_id: str) -> PromiseRecord | None:
    try:
        return await resonate.promises.get(promise_id)
    except ServerError as exc:
        if exc.code == 404:
            return None
        raise


def request_of(root: PromiseRecord) -> dict[str, Any] | None:
    """The submitted request carried in a root promise's param, or None for foreign roots."""
    param = root.param.data
    if not isinstance(param, dict) or param.get("func") != WORKFLOW_NAME:
        return None
    args = param.get("args") or []
    return args[0] if args and isinstance(args[0], dict) else None


async def latest(resonate: Resonate, url: str, approver: str) -> tuple[str, PromiseRecord] | None:
    """The newest generation of this (URL, approver) pair that the engine still keeps.

    Generations are created one after another, and retention removes the oldest first, so
    the kept ones form one unbroken run: skip the retired ones below it, stop at its end.
    """
    found: tuple[str, PromiseRecord] | None = None
    missing = 0
    for generation in range(1, MAX_GENERATIONS + 1):
        candidate = workflow_id(url, approver, generation)
        record = await get_record(resonate, candidate)
        if record is not None:
            found, missing = (candidate, record), 0
            continue
        missing += 1
        if found is not None or missing >= MAX_RETIRED_RUN:
            return found
    return found


async def view(resonate: Resonate, request_id: str, progress: Progress) -> RequestView | None:
    root = await get_record(resonate, request_id)
    if root is None:
        return None
    request = request_of(root)
    if request is None:
        return None
    children = await _children(resonate, request_id)
    rounds, waiting_round, asked = _rounds(children)
    base = RequestView(
        id=request_id,
        state="summarizing",
        url=request["url"],
        approver=request["approver"],
        detail="",
        created_at=root.created_at or int(request.get("submitted_at", 0)),
        rounds=rounds,
    )
    if root.state == "resolved":
        last = rounds[-1] if rounds else None
        detail = f"approved by {last.by} via {last.via}" if last else "approved"
        return replace(base, state="approved", detail=detail)
    if root.state != "pending":
        return replace(base, state="failed", detail=_failure(root))
    note = await _fresh_note(progress, request_id, children)
    if waiting_round is not None and asked:
        return replace(
            base,
            state="waiting",
            detail=note or f"waiting for {request['approver']} to decide round {waiting_round}",
        )
    if waiting_round is not None:
        return replace(base, detail=note or f"sending round {waiting_round} to the approver")
    step = "downloading the page" if not children else f"summarizing round {len(rounds) + 1}"
    return replace(base, detail=note or step)


async def listing(resonate: Resonate, progress: Progress, limit: int = 100) -> list[RequestView]:
    """Requests known to the engine: every pending one first, then finished ones up to ``limit``.

    Roots are found by the routing tag every ``rpc`` to the worker group stamps on them, which
    neither the rounds' promises nor the steps' checkpoints carry; searching pending ones first
    keeps the dashboard cheap however many finished requests retention keeps.
    """
    target = default_resolve_target(WORKER_GROUP)
    pending = await _roots(resonate, "pending", target, limit)
    waiting = set(pending)
    finished = [
        rid
        for rid in await _roots(resonate, None, target, limit + len(pending))
        if rid not in waiting
    ]
    chosen = (pending + finished)[:limit]
    views = [v for rid in chosen if (v := await view(resonate, rid, progress))]
    views.sort(key=lambda v: (v.finished, -v.created_at))
    return views


async def _roots(resonate: Resonate, state: str | None, target: str, limit: int) -> list[str]:
    roots: list[str] = []
    cursor: str | None = None
    while len(roots) < limit:
        page = await resonate.promises.search(
            state=state, tags={"resonate:target": target}, limit=100, cursor=cursor
        )
        roots.extend(r.id for r in page.promises if request_of(r) is not None)
        cursor = page.cursor
        if not cursor:
            break
    return roots[:limit]


async def approver_of(resonate: Resonate, request_id: str) -> str | None:
    root = await get_record(resonate, request_id)
    request = request_of(root) if root else None
    return normalize_email(request["approver"]) if request else None


async def pending_round(resonate: Resonate, request_id: str) -> str | None:
    """The promise id of the round now waiting for a decision, if any."""
    children = await _children(resonate, request_id)
    for record in reversed(children):
        if _is_decision_promise(record):
            return record.id if record.state == "pending" else None
    return None


async def _fresh_note(
    progress: Progress, request_id: str, children: list[PromiseRecord]
) -> str | None:
    """The step's note, unless something happened since it was written."""
    note = await progress.get(request_id)
    if note is None:
        return None
    last = max((max(c.created_at, c.settled_at or 0) for c in children), default=0)
    return note.detail if note.at >= last else None


async def _children(resonate: Resonate, request_id: str) -> list[PromiseRecord]:
    """Direct children in creation order (``<id>:1``, ``<id>:2``, …), found by the lineage
    tag every child carries: one search page instead of one read per step."""
    prefix = f"{request_id}:"
    children: dict[int, PromiseRecord] = {}
    cursor: str | None = None
    while True:
        page = await resonate.promises.search(
            state=None, tags={"resonate:origin": request_id}, limit=100, cursor=cursor
        )
        for record in page.promises:
            seq = record.id.removeprefix(prefix)
            if record.id.startswith(prefix) and seq.isdigit():
                children[int(seq)] = record
        cursor = page.cursor
        if not cursor:
            return [children[seq] for seq in sorted(children)]


def _is_decision_promise(record: PromiseRecord) -> bool:
    return record.tags.get("resonate:external") == "true"


def _rounds(children: list[PromiseRecord]) -> tuple[list[RoundView], int | None, bool]:
    """Fold the children into rounds; also say which round waits and whether it was sent."""
    rounds: list[RoundView] = []
    waiting: int | None = None
    asked = False
    for record in children:
        value = record.value.data
        if _is_decision_promise(record):
            current = rounds[-1]
            if record.state == "pending":
                waiting, asked = current.number, False
                rounds[-1] = replace(current, round_id=record.id)
            elif record.state == "resolved":
                decision = Decision.from_value(value)
                rounds[-1] = replace(
                    current,
                    round_id=record.id,
                    decision=decision.verdict,
                    reason=decision.reason,
                    by=decision.by,
                    via=decision.via,
                    decided_at=decision.at,
                )
        elif isinstance(value, dict) and value.get("kind") == "summary":
            rounds.append(
                RoundView(
                    number=len(rounds) + 1,
                    summary=value["text"],
                    summarizer=value["summarizer"],
                    model=value.get("model"),
                )
            )
        elif isinstance(value, dict) and value.get("kind") == "asked":
            rounds[-1] = replace(rounds[-1], asked_at=value["at"])
            asked = True
    return rounds, waiting, asked


def _failure(root: PromiseRecord) -> str:
    value = root.value.data
    if root.state == "rejected_timedout":
        return "timed out"
    if isinstance(value, dict) and isinstance(value.get("message"), str):
        return value["message"]
    return root.state.replace("_", " ")
