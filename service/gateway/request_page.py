"""The operator's page for one request: every round's summary and decision, the audit timeline,
the JSON one click away. The dashboard lists requests; this is where one is read."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from service import status
from service.gateway.routes import NotFound, gateway
from service.ledger import Event


@dataclass(frozen=True)
class Line:
    """One timeline entry as the page shows it."""

    at: int
    what: str


async def request_page(request: Request) -> Response:
    gw = gateway(request)
    if gw.principal(request) is None:
        return RedirectResponse("/login", status_code=303)
    record = await gw.ledger.read(request.path_params["request_id"])
    if record is None:
        raise NotFound("no such request")
    events = [Line(e.at, describe(e)) for e in record.chain.events]
    return gw.render(request, "request.html", {"view": record.view(), "events": events})


def describe(event: Event) -> str:
    """One sentence per fact, with the evidence an operator checks first."""
    data = event.data
    evidence = data.get("evidence") or {}
    if event.kind == "submitted":
        request = data["request"]
        hint = f" (says it is {request['client']})" if request.get("client") else ""
        return f"Submitted by {request.get('submitted_by', 'unknown')}{hint}."
    if event.kind == "fetched":
        return f"Page fetched ({data.get('chars', 0):,} characters of text)."
    if event.kind == "summarized":
        model = f", {data['model']}" if data.get("model") else ""
        return f"Round {data['round']} summarized ({data.get('summarizer')}{model})."
    if event.kind == "asked":
        how = f" as {data['message_id']}" if data.get("message_id") else ""
        return (
            f"Round {data['round']} sent to {data.get('recipient')} by {data.get('channel')}{how}."
        )
    if event.kind == "link_opened":
        return f"Decision link opened from {data.get('address')} ({_agent(data)})."
    if event.kind == "reminded":
        return (
            f"Reminder {data['reminder']} of round {data['round']} sent ({data.get('message_id')})."
        )
    if event.kind == "cancel_requested":
        reason = f": {data['reason']}" if data.get("reason") else ""
        return f"Cancellation asked by {_who(data)}{reason}{_seen(evidence)}."
    if event.kind == "told":
        return f"{data.get('to')} told the request ended without them."
    if event.kind == "decided" and data.get("via") == "expiry":
        return f"Round {data['round']} reached its deadline: {status.ended_by(data)}."
    if event.kind == "decided":
        word = WORDS.get(data["verdict"], data["verdict"])
        return f"{word} round {data['round']} by {_who(data)}{_seen(evidence)}."
    if event.kind == "refused":
        return f"Refused a decision by {_who(data)}: {data.get('why')}{_seen(evidence)}."
    if event.kind == "reply_unclear":
        return f"Unclear reply from {data.get('by')}; asked to answer YES or NO{_seen(evidence)}."
    if event.kind == "callback":
        if data.get("delivered"):
            return f"Callback delivered to {data.get('url')}."
        return f"Callback to {data.get('url')} given up: {data.get('error')}."
    if event.kind == "finished":
        return f"Finished: {data.get('state')} ({data.get('detail')})."
    return f"{event.kind.replace('_', ' ').capitalize()}."


WORDS = {"approve": "Approved", "reject": "Rejected", "cancel": "Cancelled"}


def _who(data: dict[str, Any]) -> str:
    return f"{data.get('by')} via {data.get('via')}"


def _agent(data: dict[str, Any]) -> str:
    return str(data.get("user_agent") or "no user agent")


def _seen(evidence: dict[str, Any]) -> str:
    """What the channel saw of the decider, for the sentence's tail."""
    shown = [
        f"{name.replace('_', ' ')} {value}"
        for name, value in evidence.items()
        if value and name in ("from", "envelope_sender", "dkim", "message_id", "address", "token")
    ]
    return f" — {', '.join(shown)}" if shown else ""
