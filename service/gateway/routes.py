"""Endpoints: parse the request, call the ledger or decisions, answer with a page or JSON.

GET only renders (mail scanners prefetch links); POST decides. Errors are raised as domain
errors and mapped to statuses in ``gateway.app``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response, StreamingResponse

from service import decisions, submissions, tokens
from service.decisions import Actor
from service.domain import normalize_email
from service.errors import MailgateError
from service.gateway import auth
from service.gateway.context import Gateway, client_address, client_hint
from service.ledger import Round
from service.metrics import CONTENT_TYPE_LATEST
from service.status import REQUEST_STATES

LISTING_LIMIT_DEFAULT = 50
EDITED_SUMMARY_MAX_CHARS = 20_000
#: A round that ended without its approver (expired, cancelled): the link is gone for good.
GONE = 410
LISTING_LIMIT_MAX = 500

logger = logging.getLogger(__name__)


class NotFound(MailgateError):
    pass


class CrossSite(MailgateError):
    """A browser sent this from another site: with a session cookie or on loopback without a
    token, that would let any web page the operator visits act as the operator."""


class NotJson(MailgateError):
    """The API takes JSON only, which a cross-site HTML form cannot send without a preflight."""


def refuse_cross_site(request: Request) -> None:
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise CrossSite("cross-site requests are refused")
    origin = request.headers.get("origin")
    if origin and origin != "null":
        host = origin.split("://", 1)[-1]
        if host != request.headers.get("host"):
            raise CrossSite(f"requests from {origin} are refused")


async def api_body(request: Request) -> dict[str, Any]:
    refuse_cross_site(request)
    if not request.headers.get("content-type", "").startswith("application/json"):
        raise NotJson("send the body as application/json")
    return await body_of(request)


def gateway(request: Request) -> Gateway:
    return request.app.state.gateway


def wants_json(request: Request) -> bool:
    accept = request.headers.get("accept", "")
    content_type = request.headers.get("content-type", "")
    return "application/json" in accept or (
        "text/html" not in accept and content_type.startswith("application/json")
    )


async def body_of(request: Request) -> dict[str, Any]:
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            body = await request.json()
        except RecursionError:
            raise submissions.InvalidSubmission("body: nested too deeply") from None
        except ValueError:
            raise submissions.InvalidSubmission("body: not valid JSON") from None
        if not isinstance(body, dict):
            raise submissions.InvalidSubmission("body: a JSON object is required")
        return body
    return dict(await request.form())


async def metrics(request: Request) -> Response:
    gw = gateway(request)
    gw.require_api(request)
    return Response(gw.metrics.render(), media_type=CONTENT_TYPE_LATEST)


async def healthz(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def readyz(request: Request) -> Response:
    gw = gateway(request)
    try:
        await gw.ledger.ping()
    except Exception as exc:  # any failure to reach the engine means not ready
        return JSONResponse({"ready": False, "engine": str(exc)}, status_code=503)
    return JSONResponse({"ready": True})


async def submit(request: Request) -> Response:
    gw = gateway(request)
    caller = gw.require_api(request)
    body = await api_body(request)
    result = await submissions.submit(
        gw.ledger,
        url=body.get("url"),
        email=body.get("email"),
        callback_url=body.get("callback_url"),
        repeat=bool(body.get("repeat", False)),
        policy=gw.policy,
        now_ms=gw.clock(),
        submitted_by=caller,
        client=client_hint(request),
        version=gw.workflow_version,
        expires_in=body.get("expires_in"),
        on_expiry=body.get("on_expiry"),
        approvers=body.get("approvers"),
        quorum=body.get("policy"),
        escalate_to=body.get("escalate_to"),
        escalate_after=body.get("escalate_after"),
    )
    if result.created:
        gw.metrics.requests.labels("submitted").inc()
    status_url = f"{gw.public_url.rstrip('/')}/requests/{result.id}"
    logger.info("request %s %s", result.id, "started" if result.created else "already known")
    return JSONResponse(
        {"id": result.id, "status_url": status_url, "created": result.created},
        status_code=202 if result.created else 200,
    )


async def request_status(request: Request) -> Response:
    gw = gateway(request)
    gw.require_api(request)
    found = await gw.ledger.view(request.path_params["request_id"])
    if found is None:
        raise NotFound("no such request")
    return JSONResponse(found.to_json())


async def request_events(request: Request) -> Response:
    """The request's audit trail, and whether it checks out."""
    gw = gateway(request)
    gw.require_api(request)
    request_id = request.path_params["request_id"]
    verification = await gw.ledger.verify(request_id)
    if verification is None:
        raise NotFound("no such request")
    chain = await gw.ledger.chain(request_id)
    return JSONResponse(
        {
            "id": request_id,
            "events": [event.to_value() for event in chain.events],
            "verification": verification.to_json(),
        }
    )


async def request_list(request: Request) -> Response:
    gw = gateway(request)
    gw.require_api(request)
    query = request.query_params
    state = query.get("state") or None
    if state is not None and state not in REQUEST_STATES:
        raise submissions.InvalidSubmission(f"state: one of {', '.join(REQUEST_STATES)}")
    try:
        limit = int(query.get("limit", LISTING_LIMIT_DEFAULT))
    except ValueError:
        raise submissions.InvalidSubmission("limit: a whole number") from None
    if not 1 <= limit <= LISTING_LIMIT_MAX:
        raise submissions.InvalidSubmission(f"limit: between 1 and {LISTING_LIMIT_MAX}")
    approver = query.get("approver")
    page = await gw.ledger.listing(
        state=state,
        approver=normalize_email(approver) if approver else None,
        limit=limit,
        cursor=query.get("cursor") or None,
    )
    return JSONResponse({"requests": page.rows, "cursor": page.cursor})


async def audit_export(request: Request) -> Response:
    """Every event of every kept request, as JSON lines (``mailgate audit export``)."""
    gw = gateway(request)
    gw.require_api(request)
    try:
        since = int(request.query_params.get("since", "0"))
    except ValueError:
        raise submissions.InvalidSubmission("since: epoch milliseconds") from None

    async def lines() -> AsyncIterator[bytes]:
        async for request_id in gw.ledger.request_ids():
            for event in (await gw.ledger.chain(request_id)).events:
                if event.at >= since:
                    yield json.dumps(event.to_value(), ensure_ascii=False).encode() + b"\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


async def audit_verify(request: Request) -> Response:
    """Check every kept request's trail (``mailgate audit verify``), one JSON line each."""
    gw = gateway(request)
    gw.require_api(request)

    async def lines() -> AsyncIterator[bytes]:
        async for request_id in gw.ledger.request_ids():
            verification = await gw.ledger.verify(request_id)
            if verification is not None:
                yield json.dumps(verification.to_json()).encode() + b"\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


async def operator_decision(request: Request) -> Response:
    """``mailgate decide``: an operator settles the round now waiting."""
    gw = gateway(request)
    caller = gw.require_api(request)
    request_id = request.path_params["request_id"]
    body = await api_body(request)
    verdict = body.get("verdict")
    if verdict not in ("approve", "reject"):
        raise submissions.InvalidSubmission("verdict: approve or reject")
    view = await gw.ledger.view(request_id)
    if view is None:
        raise NotFound("no such request")
    waiting = next((r for r in view.rounds if r.decision is None and r.round_id), None)
    if view.state != "waiting" or waiting is None or waiting.round_id is None:
        return JSONResponse(
            {"error": f"request is {view.state}: no round is waiting for a decision"},
            status_code=409,
        )
    evidence = _api_evidence(request, caller)
    claimed = body.get("by")
    if isinstance(claimed, str) and claimed.strip():
        evidence["claimed_by"] = claimed.strip()[:200]
    found = await gw.decisions.find(waiting.round_id)
    outcome = await gw.decisions.decide(
        found,
        verdict=verdict,
        reason=_text(body.get("reason")),
        actor=Actor(by=caller, via="api", evidence=evidence),
    )
    return _outcome_json(outcome)


async def cancel(request: Request) -> Response:
    """``DELETE /requests/{id}`` (``mailgate cancel``): the request ends ``cancelled``."""
    gw = gateway(request)
    caller = gw.require_api(request)
    refuse_cross_site(request)
    request_id = request.path_params["request_id"]
    body = await body_of(request) if await request.body() else {}
    evidence = _api_evidence(request, caller)
    outcome = await gw.decisions.cancel(
        request_id,
        actor=Actor(by=caller, via="api", evidence=evidence),
        reason=_text(body.get("reason")),
    )
    if outcome is None:
        raise NotFound("no such request")
    if isinstance(outcome, decisions.Finished):
        return JSONResponse(
            {"id": request_id, "error": f"request is {outcome.state}: nothing to cancel"},
            status_code=409,
        )
    logger.info("request %s cancelled by %s", request_id, caller)
    return JSONResponse({"id": request_id, "cancelling": True}, status_code=202)


async def decide_page(request: Request) -> Response:
    gw = gateway(request)
    link = gw.verify_link(request.path_params["token"])
    found = await gw.decisions.find(link.promise_id)
    view = found.record.view()
    current = next(
        (r for r in view.rounds if r.round_id == link.promise_id or r.number == found.number),
        None,
    )
    await _opened(gw, request, found)
    preselect = request.query_params.get("verdict")
    late = None if found.pending else decisions.late_why(found.decision)
    mine = next(
        (a for a in (current.answers if current else []) if a.approver == link.approver), None
    )
    return gw.render(
        request,
        "decide.html",
        {
            "view": view,
            "round": current,
            "me": link.approver,
            "mine": mine,
            "pending": found.pending and (mine is None or mine.answer == "waiting"),
            "late": late,
            "preselect": preselect if preselect in ("approve", "reject") else None,
        },
        status_code=GONE if late in ("expired", "cancelled") else 200,
    )


async def _opened(gw: Gateway, request: Request, found: Round) -> None:
    """One ``link_opened`` event per round, client address and user agent: a mail scanner's
    prefetch and the person's visit are told apart, a reload is not recorded twice."""
    address = client_address(request)
    agent = request.headers.get("user-agent", "")[:300]
    seen = hashlib.blake2b(f"{address}\n{agent}".encode(), digest_size=8).hexdigest()
    await gw.ledger.append(
        found.record.request_id,
        "link_opened",
        {"round_id": found.round_id, "address": address, "user_agent": agent},
        key=f"opened:{found.round_id}:{seen}",
        chain=found.record.chain,
    )
    logger.info(
        "decision link viewed for %s",
        found.round_id,
        extra={"event": "link_viewed", "request_id": found.record.request_id},
    )


async def decide_commit(request: Request) -> Response:
    gw = gateway(request)
    link = gw.verify_link(request.path_params["token"])
    body = await body_of(request)
    verdict = body.get("verdict")
    if verdict not in ("approve", "reject"):
        raise submissions.InvalidSubmission("verdict: choose approve or reject")
    found = await gw.decisions.find(link.promise_id)
    outcome = await gw.decisions.decide(
        found,
        verdict=verdict,
        reason=_text(body.get("reason")),
        actor=Actor(by=link.approver, via="link", evidence=_link_evidence(request)),
        approver=link.approver,
        edited_summary=_edited(found, verdict, body.get("summary")),
    )
    if wants_json(request):
        return _outcome_json(outcome)
    if isinstance(outcome, decisions.Voted | decisions.AlreadyVoted):
        return gw.render(
            request,
            "done.html",
            {
                "outcome": outcome,
                "accepted": False,
                "voted": True,
                "already": isinstance(outcome, decisions.AlreadyVoted),
                "late": None,
            },
            status_code=200 if isinstance(outcome, decisions.Voted) else 409,
        )
    accepted = isinstance(outcome, decisions.Accepted)
    late = None if accepted else decisions.late_why(outcome.decision)
    return gw.render(
        request,
        "done.html",
        {"outcome": outcome, "accepted": accepted, "late": late},
        status_code=200 if accepted else GONE if late in ("expired", "cancelled") else 409,
    )


async def delegate(request: Request) -> Response:
    """The approver hands their place in the round to someone else (a signed link only: a
    reply's From could be forged)."""
    gw = gateway(request)
    link = gw.verify_link(request.path_params["token"])
    body = await body_of(request)
    to = submissions.check_approver(body.get("to"), gw.policy, field="to")
    found = await gw.decisions.find(link.promise_id)
    actor = Actor(by=link.approver, via="link", evidence=_link_evidence(request))
    await gw.decisions.delegate(found, giver=link.approver, to=to, actor=actor)
    if wants_json(request):
        return JSONResponse({"id": found.record.request_id, "delegated_to": to})
    return gw.render(request, "done.html", {"delegated_to": to, "accepted": False, "late": None})


async def reassign(request: Request) -> Response:
    """``mailgate reassign``: the operator hands an approver's place in the waiting round to
    someone else."""
    gw = gateway(request)
    caller = gw.require_api(request)
    body = await api_body(request)
    giver = submissions.check_approver(body.get("from"), gw.policy, field="from")
    to = submissions.check_approver(body.get("to"), gw.policy, field="to")
    view = await gw.ledger.view(request.path_params["request_id"])
    if view is None:
        raise NotFound("no such request")
    waiting = next((r for r in view.rounds if r.decision is None and r.round_id), None)
    if view.state != "waiting" or waiting is None or waiting.round_id is None:
        return JSONResponse(
            {"error": f"request is {view.state}: no round is waiting"}, status_code=409
        )
    found = await gw.decisions.find(waiting.round_id)
    evidence = _api_evidence(request, caller)
    actor = Actor(by=caller, via="api", evidence=evidence)
    await gw.decisions.delegate(found, giver=giver, to=to, actor=actor)
    return JSONResponse({"id": view.id, "from": giver, "to": to})


def _api_evidence(request: Request, caller: str) -> dict[str, str]:
    """What the operator API knows of its caller: the token's name (the truth), what the
    caller says it is, and where it called from."""
    return {
        "token": caller,
        "client": client_hint(request) or "",
        "address": client_address(request),
    }


def _link_evidence(request: Request) -> dict[str, str]:
    return {
        "address": client_address(request),
        "user_agent": request.headers.get("user-agent", "")[:300],
    }


def _edited(found: Round, verdict: str, summary: object) -> str | None:
    """The approver's corrected summary, when they changed it before approving."""
    if verdict != "approve" or not isinstance(summary, str) or not summary.strip():
        return None
    asked = next(
        (
            e
            for e in found.record.chain.events
            if e.kind == "summarized" and e.data["round"] == found.number
        ),
        None,
    )
    original = asked.data["text"] if asked else ""
    if " ".join(summary.split()) == " ".join(original.split()):
        return None
    return summary.strip()[:EDITED_SUMMARY_MAX_CHARS]


async def dashboard(request: Request) -> Response:
    gw = gateway(request)
    if gw.principal(request) is None:
        return RedirectResponse("/login", status_code=303)
    cursor = request.query_params.get("cursor") or None
    page = await gw.ledger.listing(limit=LISTING_LIMIT_DEFAULT, cursor=cursor)
    return gw.render(request, "dashboard.html", {"views": page.rows, "cursor": page.cursor})


async def login(request: Request) -> Response:
    gw = gateway(request)
    if not gw.api_tokens.required:
        return RedirectResponse("/", status_code=303)
    if request.method == "GET":
        return gw.render(request, "login.html", {"failed": False})
    refuse_cross_site(request)
    form = await request.form()
    name = gw.api_tokens.name_of(str(form.get("token", "")))
    if name is None:
        return gw.render(request, "login.html", {"failed": True}, status_code=401)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        auth.SESSION_COOKIE,
        tokens.sign_session(name, secrets=gw.secrets, now_ms=gw.clock()),
        max_age=auth.SESSION_TTL_S,
        httponly=True,
        samesite="strict",
        secure=auth.cookies_secure(request, gw.public_url),
    )
    return response


def _text(value: object) -> str | None:
    return submissions.check_reason(value)


def _outcome_json(outcome: decisions.Outcome) -> Response:
    if isinstance(outcome, decisions.Voted):
        return JSONResponse(
            {"id": outcome.request_id, "accepted": True, "voted": outcome.verdict, "decision": None}
        )
    if isinstance(outcome, decisions.AlreadyVoted):
        return JSONResponse(
            {
                "id": outcome.request_id,
                "accepted": False,
                "error": "you already answered",
                "voted": outcome.verdict,
            },
            status_code=409,
        )
    if isinstance(outcome, decisions.Accepted):
        return JSONResponse(
            {"id": outcome.request_id, "accepted": True, "decision": outcome.decision.to_value()}
        )
    existing = outcome.decision.to_value() if outcome.decision else None
    state = outcome.state if isinstance(outcome, decisions.AlreadyDecided) else "resolved"
    late = decisions.late_why(outcome.decision)
    return JSONResponse(
        {
            "id": outcome.request_id,
            "accepted": False,
            "error": late,
            "decision": existing,
            "state": state,
        },
        status_code=GONE if late in ("expired", "cancelled") else 409,
    )
