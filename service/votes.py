"""Who a round is addressed to, what each of them answered, and when that decides the round.

Pure: everything is read from the request and its audit trail. A round goes to the request's
approvers, with any delegation applied (a delegate takes the delegator's place for this round
and the rounds after), and to the escalation contacts once the round was escalated. Under the
``any`` policy the first answer settles the round directly; under ``all`` and ``min`` each
answer is a ``voted`` event, and ``tally`` folds the votes in the order the trail holds them.
The first prefix of that order that decides is the decision, so every process that folds the
same trail — however many votes it sees beyond that prefix — reaches the same verdict, and the
process whose vote completed the prefix is sure to see it (it appended after all earlier votes).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from service.domain import Ending, Quorum, Request


class EventLike(Protocol):
    @property
    def kind(self) -> str: ...
    @property
    def data(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Vote:
    voter: str
    verdict: Ending
    reason: str | None
    via: str
    edited_summary: str | None = None


def people(request: Request, events: Iterable[EventLike]) -> list[str]:
    """Everyone a reply address may name, in a fixed order: the request's approvers and
    escalation contacts, then delegates in the order they were added."""
    everyone = list(request.people)
    for event in events:
        if event.kind == "delegated" and event.data["to"] not in everyone:
            everyone.append(event.data["to"])
    return everyone


def approvers(request: Request, events: Iterable[EventLike]) -> list[str]:
    """The approvers now, with every delegation so far applied."""
    current = list(request.approvers)
    for event in events:
        if event.kind == "delegated" and event.data["from"] in current:
            current[current.index(event.data["from"])] = event.data["to"]
    return current


def escalated(request: Request, events: Iterable[EventLike], round_id: str) -> list[str]:
    """The escalation contacts this round was offered to (with delegations applied)."""
    events = list(events)
    if not any(e.kind == "escalated" and e.data["round_id"] == round_id for e in events):
        return []
    contacts = [a for a in request.escalate_to if a not in request.approvers]
    for event in events:
        if event.kind == "delegated" and event.data["from"] in contacts:
            contacts[contacts.index(event.data["from"])] = event.data["to"]
    return contacts


def addressees(request: Request, events: Sequence[EventLike], round_id: str) -> list[str]:
    return approvers(request, events) + [
        a for a in escalated(request, events, round_id) if a not in approvers(request, events)
    ]


def votes(events: Iterable[EventLike], round_id: str) -> list[Vote]:
    """The round's votes in the trail's order, one per voter (a second never counts)."""
    found: dict[str, Vote] = {}
    for event in events:
        data = event.data
        if event.kind == "voted" and data["round_id"] == round_id and data["by"] not in found:
            found[data["by"]] = Vote(
                data["by"],
                data["verdict"],
                data.get("reason"),
                data["via"],
                data.get("edited_summary"),
            )
    return list(found.values())


def tally(
    quorum: Quorum, required: Sequence[str], escalated_to: Sequence[str], cast: Sequence[Vote]
) -> tuple[Ending, list[Vote]] | None:
    """The round's verdict and the votes that carried it, or None while it is open.

    ``required`` are the approvers, ``escalated_to`` the escalation contacts the round was also
    offered to. Under ``all`` every approver must approve and one rejection rejects; an
    escalation contact's approval stands in for the approvers who have not answered (that is
    what escalating to them is for). Under ``min`` N approvals from anyone the round is
    addressed to approve, and it is rejected once N can no longer be reached.
    """
    voters = len(required) + len(escalated_to)
    seen: list[Vote] = []
    for vote in cast:
        seen.append(vote)
        approved = [v for v in seen if v.verdict == "approve"]
        rejected = [v for v in seen if v.verdict == "reject"]
        if quorum.kind == "all":
            if rejected:
                return "reject", rejected
            if vote.voter in escalated_to and vote.verdict == "approve":
                return "approve", approved
            if {v.voter for v in approved} >= set(required):
                return "approve", approved
        elif quorum.kind == "min":
            if len(approved) >= quorum.min:
                return "approve", approved
            if len(rejected) > voters - quorum.min:
                return "reject", rejected
        else:
            return vote.verdict, [vote]
    return None


def joined_reasons(cast: Sequence[Vote]) -> str | None:
    """Every reason given, each named, for the next summary's prompt."""
    named = [f"{v.voter}: {v.reason}" for v in cast if v.reason]
    return "\n".join(named) or None
