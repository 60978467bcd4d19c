"""The status fold on its own (pure): answers that land before their round's ``asked`` record
(the record is written once every copy went out) still count, and a decided round stays
decided whatever order its events came in."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from service.domain import Quorum, Request
from service.status import build

URL = "https://example.com/tide-pools"
A, B, C = "a@example.com", "b@example.com", "c@example.com"
ROUND = "mg-0123456789abcdef0123:2"


@dataclass
class E:
    kind: str
    data: dict[str, Any] = field(default_factory=dict)
    at: int = 1


def request(*approvers: str, quorum: Quorum | None = None) -> Request:
    return Request(URL, approvers, None, 1, quorum=quorum or Quorum())


def summarized() -> E:
    return E("summarized", {"round": 1, "text": "T.", "summarizer": "x", "model": None})


def asked(*recipients: str) -> E:
    return E("asked", {"round": 1, "round_id": ROUND, "recipients": list(recipients)})


def voted(by: str, verdict: str) -> E:
    return E("voted", {"round": 1, "round_id": ROUND, "by": by, "verdict": verdict, "via": "link"})


def decided(verdict: str, by: str) -> E:
    return E(
        "decided", {"round": 1, "round_id": ROUND, "verdict": verdict, "by": by, "via": "votes"}
    )


def answers(view) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {a.approver: a.answer for a in view.rounds[0].answers}


def test_votes_before_the_asked_record_are_kept():
    view = build(
        "mg-x",
        request(A, B, C, quorum=Quorum("all")),
        [summarized(), voted(A, "approve"), asked(A, B, C)],
    )
    assert answers(view) == {A: "approved", B: "waiting", C: "waiting"}
    assert view.state == "waiting"


def test_a_round_decided_before_its_asked_record_stays_decided():
    events = [summarized(), voted(A, "reject"), decided("reject", A), asked(A, B, C)]
    view = build("mg-x", request(A, B, C, quorum=Quorum("all")), events)
    assert answers(view) == {A: "rejected", B: "not needed", C: "not needed"}
    assert view.state == "summarizing" and view.detail == "summarizing round 2"


def test_a_delegate_takes_the_place_for_later_rounds():
    events = [
        summarized(),
        asked(A, B),
        E("delegated", {"round": 1, "round_id": ROUND, "from": B, "to": C}),
    ]
    view = build("mg-x", request(A, B, quorum=Quorum("all")), events)
    assert answers(view) == {A: "waiting", B: "delegated", C: "waiting"}
    assert view.approvers == [A, C]
