"""Endpoints: parse the request, call decisions/queries, answer with a page or JSON.

GET only renders (mail scanners prefetch links); POST decides. Errors are raised as domain
errors and mapped to statuses in ``gateway.app``.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from service import decisions, requests, submissions, tokens
from service.errors import BadToken, MailgateError
from service.gateway import auth
from service.gateway.context import Gateway
from service.metrics import CONTENT_TYPE_LATEST

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
        await requests.get_record(gw.resonate, "mailgate-readiness-probe")
    except Exception as exc:  # any failure to reach the engine means not ready
        return JSONResponse({"ready": False, "engine": str(exc)}, status_code=503)
    return JSONResponse({"ready": True})


async def submit(request: Request) -> Response:
    gw = gateway(request)
    gw.require_api(request)
    body = await api_body(request)
    result = await submissions.submit(
        gw.resonate,
        url=body.get("url"),
        email=body.get("email"),
        callback_url=body.get("callback_url"),
        repeat=bool(body.get("repeat", False)),
        policy=gw.policy,
        now_ms=gw.clock(),
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
    found = await requests.view(gw.resonate, request.path_params["request_id"], gw.progress)
    if found is None:
        raise NotFound("no such request")
    return JSONResponse(found.to_json())


async def request_list(request: Request) -> Response:
    gw = gateway(request)
    gw.require_api(request)
    views = await requests.listing(gw.resonate, gw.progress)
    return JSONResponse({"requests": [v.to_json() for v in views]})


async def operator_decision(request: Request) -> Response:
    """``mailgate decide``: an operator settles the round now waiting."""
    gw = gateway(request)
    gw.require_api(request)
    request_id = request.path_params["request_id"]
    body = await api_body(request)
    verdict = body.get("verdict")
    if verdict not in ("approve", "reject"):
        raise submissions.InvalidSubmission("verdict: approve or reject")
    promise_id = await requests.pending_round(gw.resonate, request_id)
    if promise_id is None:
        found = await requests.view(gw.resonate, request_id, gw.progress)
        if found is None:
            raise NotFound("no such request")
        return JSONResponse(
            {"error": f"request is {found.state}: no round is waiting for a decision"},
            status_code=409,
        )
    outcome = await decisions.decide(
        gw.resonate,
        promise_id=promise_id,
        verdict=verdict,
        reason=body.get("reason"),
        by=str(body.get("by") or "operator"),
        via="cli",
        now_ms=gw.clock(),
    )
    _count(gw, outcome)
    return _outcome_json(outcome)


async def decide_page(request: Request) -> Response:
    gw = gateway(request)
    link = gw.verify_link(request.path_params["token"])
    record = await requests.get_record(gw.resonate, link.promise_id)
    view = await requests.view(gw.resonate, link.promise_id.partition(":")[0], gw.progress)
    if record is None or view is None:
        raise BadToken("this decision is for a request Mailgate does not know")
    current = next((r for r in view.rounds if r.round_id == link.promise_id), None)
    logger.info(
        "decision link viewed for %s",
        link.promise_id,
        extra={"event": "link_viewed", "request_id": view.id},
    )
    preselect = request.query_params.get("verdict")
    return gw.render(
        request,
        "decide.html",
        {
            "view": view,
            "round": current,
            "pending": record.state == "pending",
            "preselect": preselect if preselect in ("approve", "reject") else None,
        },
    )


async def decide_commit(request: Request) -> Response:
    gw = gateway(request)
    link = gw.verify_link(request.path_params["token"])
    body = await body_of(request)
    verdict = body.get("verdict")
    if verdict not in ("approve", "reject"):
        raise submissions.InvalidSubmission("verdict: choose approve or reject")
    reason = body.get("reason")
    outcome = await decisions.decide(
        gw.resonate,
        promise_id=link.promise_id,
        verdict=verdict,
        reason=reason if isinstance(reason, str) else None,
        by=link.approver,
        via="link",
        now_ms=gw.clock(),
        approver=link.approver,
    )
    _count(gw, outcome)
    if wants_json(request):
        return _outcome_json(outcome)
    return gw.render(
        request,
        "done.html",
        {"outcome": outcome, "accepted": isinstance(outcome, decisions.Accepted)},
        status_code=200 if isinstance(outcome, decisions.Accepted) else 409,
    )


async def dashboard(request: Request) -> Response:
    gw = gateway(request)
    if not gw.api_allowed(request):
        return RedirectResponse("/login", status_code=303)
    views = await requests.listing(gw.resonate, gw.progress)
    return gw.render(request, "dashboard.html", {"views": views})


async def login(request: Request) -> Response:
    gw = gateway(request)
    if gw.api_token is None:
        return RedirectResponse("/", status_code=303)
    if request.method == "GET":
        return gw.render(request, "login.html", {"failed": False})
    refuse_cross_site(request)
    form = await request.form()
    candidate = str(form.get("token", ""))
    if not auth.token_matches(candidate, gw.api_token):
        return gw.render(request, "login.html", {"failed": True}, status_code=401)
    response = RedirectResponse("/", status_code=303)
    response.set_cookie(
        auth.SESSION_COOKIE,
        tokens.sign_session("dashboard", secrets=gw.secrets, now_ms=gw.clock()),
        max_age=auth.SESSION_TTL_S,
        httponly=True,
        samesite="strict",
        secure=gw.public_url.startswith("https://"),
    )
    return response


def _count(gw: Gateway, outcome: decisions.Outcome) -> None:
    if isinstance(outcome, decisions.Accepted):
        gw.metrics.decisions.labels(outcome.decision.via, outcome.decision.verdict).inc()


def _outcome_json(outcome: decisions.Outcome) -> Response:
    if isinstance(outcome, decisions.Accepted):
        return JSONResponse(
            {"id": outcome.request_id, "accepted": True, "decision": outcome.decision.to_value()}
        )
    existing = outcome.decision.to_value() if outcome.decision else None
    return JSONResponse(
        {
            "id": outcome.request_id,
            "accepted": False,
            "error": "already decided",
            "decision": existing,
            "state": outcome.state,
        },
        status_code=409,
    )
