"""What a request looks like from outside: the JSON of ``GET /requests/{id}`` and of callbacks.

Both the read model (which rebuilds it from promises) and the workflow (which knows it first
hand when the request ends) produce this one shape, so a callback and a status poll never
disagree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

RequestState = Literal["summarizing", "waiting", "approved", "failed"]


@dataclass(frozen=True)
class RoundView:
    number: int
    summary: str
    summarizer: str
    model: str | None
    decision: Literal["approve", "reject"] | None = None
    reason: str | None = None
    by: str | None = None
    via: str | None = None
    decided_at: int | None = None
    asked_at: int | None = None
    round_id: str | None = None


@dataclass(frozen=True)
class RequestView:
    id: str
    state: RequestState
    url: str
    approver: str
    detail: str
    created_at: int
    rounds: list[RoundView] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        return self.state in ("approved", "failed")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)
