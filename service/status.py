"""What a request looks like from outside, built in one place from its audit trail.

``GET /requests/{id}``, the dashboard, callbacks and the workflow's final outcome all come from
``build`` folding the request's events, so a callback and a status poll cannot disagree. Each
event also records the state and listing row the fold reached after it (``advance``), which lets
a listing read only the newest event of each request.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from service.domain import Ending, Request

RequestState = Literal[
    "summarizing", "waiting", "approved", "rejected", "expired", "cancelled", "failed"
]
REQUEST_STATES: tuple[RequestState, ...] = (
    "summarizing",
    "waiting",
    "approved",
    "rejected",
    "expired",
    "cancelled",
    "failed",
)
#: ``rejected`` is only ever the clock's (a person's "no" asks again): the submitter chose
#: ``on_expiry: reject``.
FINISHED_STATES = frozenset({"approved", "rejected", "expired", "cancelled", "failed"})
#: A listing row shows the start of the newest summary; the request's page shows all of it.
ROW_SUMMARY_CHARS = 280


@dataclass(frozen=True)
class RoundView:
    number: int
    summary: str
    summarizer: str
    model: str | None
    decision: Ending | None = None
    reason: str | None = None
    by: str | None = None
    via: str | None = None
    decided_at: int | None = None
    asked_at: int | None = None
    round_id: str | None = None
    deadline_at: int | None = None
    reminders: int = 0


@dataclass(frozen=True)
class RequestView:
    id: str
    state: RequestState
    url: str
    approver: str
    detail: str
    created_at: int
    rounds: list[RoundView] = field(default_factory=list)
    updated_at: int = 0

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def row(self) -> dict[str, Any]:
        """The compact form a listing shows, kept in every event as the state after it."""
        newest = self.rounds[-1].summary if self.rounds else ""
        if len(newest) > ROW_SUMMARY_CHARS:
            newest = newest[: ROW_SUMMARY_CHARS - 1].rstrip() + "…"
        return {
            "id": self.id,
            "state": self.state,
            "url": self.url,
            "approver": self.approver,
            "detail": self.detail,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "rounds": len(self.rounds),
            "summary": newest,
        }


class EventLike(Protocol):
    """What ``build`` reads of an event (``service.ledger.audit.Event`` has it)."""

    @property
    def kind(self) -> str: ...
    @property
    def at(self) -> int: ...
    @property
    def data(self) -> dict[str, Any]: ...


def start(request_id: str, request: Request) -> RequestView:
    return RequestView(
        id=request_id,
        state="summarizing",
        url=request.url,
        approver=request.approver,
        detail="downloading the page",
        created_at=request.submitted_at,
        updated_at=request.submitted_at,
    )


def advance(view: RequestView, kind: str, at: int, data: dict[str, Any]) -> RequestView:
    """The view after one more event. Kinds that change nothing shown (a link opened, a refused
    decision, a callback) still move ``updated_at``. A request is ``approved`` only once it
    finished (its callback tried), so ``submit --wait`` and pollers never run ahead of it."""
    view = replace(view, updated_at=max(view.updated_at, at))
    if view.finished:
        return _after_the_end(view, kind, at, data)
    if kind == "fetched":
        return replace(view, detail="summarizing round 1")
    if kind == "summarized":
        number = int(data["round"])
        kept = [r for r in view.rounds if r.number < number]
        summary = RoundView(number, data["text"], data["summarizer"], data.get("model"))
        return replace(
            view,
            rounds=[*kept, summary],
            detail=f"sending round {number} to the approver",
        )
    if kind == "asked":
        number = int(data["round"])
        deadline = data.get("deadline_at")
        view = _with_round(
            view, number, asked_at=at, round_id=data.get("round_id"), deadline_at=deadline
        )
        until = f" by {_when(deadline)}" if deadline else ""
        return replace(
            view,
            state="waiting",
            detail=f"waiting for {view.approver} to decide round {number}{until}",
        )
    if kind == "reminded":
        number = int(data["round"])
        sent = next((r.reminders for r in view.rounds if r.number == number), 0)
        return _with_round(view, number, reminders=sent + 1)
    if kind == "cancel_requested":
        return replace(view, detail=f"cancelling ({_by(data)})")
    if kind == "decided":
        number = int(data["round"])
        view = _with_round(
            view,
            number,
            decision=data["verdict"],
            reason=data.get("reason"),
            by=data.get("by"),
            via=data.get("via"),
            decided_at=int(data.get("at") or at),
            round_id=data.get("round_id"),
        )
        if data["verdict"] == "reject" and data.get("via") != "expiry":
            return replace(view, state="summarizing", detail=f"summarizing round {number + 1}")
        return replace(view, detail=f"{ended_by(data)}; finishing")
    if kind == "finished":
        return replace(view, state=data["state"], detail=data["detail"])
    return view


def _after_the_end(view: RequestView, kind: str, at: int, data: dict[str, Any]) -> RequestView:
    """A finished request's state and detail stay; facts recorded late (an imported history,
    a decider that died before recording) still fill in its rounds."""
    if kind in ("summarized", "asked", "reminded", "decided"):
        later = advance(replace(view, state="summarizing"), kind, at, data)
        return replace(later, state=view.state, detail=view.detail)
    return view


def ended_by(decision: dict[str, Any]) -> str:
    """How a round's decision ended the request, in the words the status detail uses."""
    verdict = decision.get("verdict")
    if decision.get("via") == "expiry":
        outcome = {"approve": "approved", "reject": "rejected"}.get(str(verdict), "expired")
        deadline = decision.get("evidence", {}).get("deadline_at")
        when = f" at {_when(int(deadline))}" if deadline else ""
        return f"{outcome}: no decision by the deadline{when}"
    if verdict == "cancel":
        reason = f": {decision['reason']}" if decision.get("reason") else ""
        return f"cancelled by {decision.get('by')} via {decision.get('via')}{reason}"
    return f"approved by {decision.get('by')} via {decision.get('via')}"


def ending_state(decision: dict[str, Any]) -> RequestState:
    """The request's final state for a decision that ends it."""
    if decision.get("verdict") == "cancel":
        return "cancelled"
    if decision.get("via") == "expiry":
        return {"approve": "approved", "reject": "rejected"}.get(
            str(decision.get("verdict")), "expired"
        )
    return "approved"


def _by(data: dict[str, Any]) -> str:
    return f"by {data.get('by')}" + (f": {data['reason']}" if data.get("reason") else "")


def _when(epoch_ms: int) -> str:
    return f"{datetime.fromtimestamp(epoch_ms / 1000, UTC):%Y-%m-%d %H:%M:%S} UTC"


def _with_round(view: RequestView, number: int, **changes: Any) -> RequestView:
    rounds = [replace(r, **changes) if r.number == number else r for r in view.rounds]
    return replace(view, rounds=rounds)


def build(
    request_id: str,
    request: Request,
    events: Iterable[EventLike],
    *,
    ended: str | None = None,
    note: tuple[str, int] | None = None,
) -> RequestView:
    """Fold the trail. ``ended`` is why the workflow's root settled when no ``finished`` event
    says so (the engine timed it out, or someone settled it by hand): the request failed.
    ``note`` is a step's latest word (detail, written at), shown while nothing newer happened.
    """
    view = start(request_id, request)
    for event in events:
        view = advance(view, event.kind, event.at, event.data)
    if ended is not None and not view.finished:
        return replace(view, state="failed", detail=ended)
    if note is not None and not view.finished and note[1] >= view.updated_at and note[0]:
        return replace(view, detail=note[0])
    return view
