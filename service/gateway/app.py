"""The gateway's route table and its one mapping from errors to HTTP answers."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from resonate.error import ResonateError
from resonate_base.error import ConnectorError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.decisions import Undelegable
from service.errors import BadToken, ExpiredToken, MailgateError
from service.gateway import openapi, routes
from service.gateway.body_limit import HTTP_MAX_BYTES_DEFAULT, BodyLimit, BodyTooLarge
from service.gateway.context import Gateway, Unauthorized
from service.gateway.request_page import request_page
from service.gateway.throttle import Rule, Throttle, TooManyAttempts
from service.submissions import InvalidSubmission

logger = logging.getLogger(__name__)

#: error class → (status, page title); the first match wins, so subclasses come first.
ERRORS: list[tuple[type[Exception], int, str]] = [
    (ExpiredToken, 410, "This link has expired"),
    (BadToken, 403, "This link is not valid"),
    (InvalidSubmission, 422, "That request is not valid"),
    (Undelegable, 409, "That cannot be handed over"),
    (BodyTooLarge, 413, "That request is too large"),
    (TooManyAttempts, 429, "Too many attempts"),
    (Unauthorized, 401, "Sign in required"),
    (routes.NotFound, 404, "Not found"),
    (routes.CrossSite, 403, "Refused"),
    (routes.NotJson, 415, "JSON required"),
    (ConnectorError, 503, "The engine is unavailable"),
    (ResonateError, 503, "The engine is unavailable"),
]


def build_app(
    gateway: Gateway,
    *,
    max_body_bytes: int = HTTP_MAX_BYTES_DEFAULT,
    throttle: Sequence[Rule] = (),
) -> Starlette:
    """``throttle``: the limits on failed attempts (``throttle.rules``); none by default."""
    app = Starlette(
        routes=[
            Route("/", routes.dashboard, name="dashboard"),
            Route("/dashboard/{request_id}", request_page, name="request_page"),
            Route("/login", routes.login, methods=["GET", "POST"], name="login"),
            Route("/healthz", routes.healthz),
            Route("/readyz", routes.readyz),
            Route("/metrics", routes.metrics),
            Route("/requests", routes.submit, methods=["POST"]),
            Route("/requests", routes.request_list, methods=["GET"]),
            Route("/requests/{request_id}", routes.request_status, name="request_status"),
            Route("/requests/{request_id}", routes.cancel, methods=["DELETE"]),
            Route("/requests/{request_id}/events", routes.request_events),
            Route("/audit/events", routes.audit_export),
            Route("/audit/verify", routes.audit_verify),
            Route("/requests/{request_id}/decision", routes.operator_decision, methods=["POST"]),
            Route("/requests/{request_id}/reassign", routes.reassign, methods=["POST"]),
            Route("/decide/{token}", routes.decide_page, methods=["GET"]),
            Route("/decide/{token}", routes.decide_commit, methods=["POST"]),
            Route("/decide/{token}/delegate", routes.delegate, methods=["POST"]),
            Route("/openapi.json", openapi.serve),
        ],
        middleware=[
            Middleware(Throttle, rules=throttle, refuse=_handle_error),
            Middleware(BodyLimit, max_bytes=max_body_bytes, refuse=_handle_error),
        ],
        exception_handlers={
            kind: _handle_error for kind in (MailgateError, ResonateError, ConnectorError)
        },
    )
    app.state.gateway = gateway
    return app


async def _handle_error(request: Request, exc: Exception) -> Response:
    status, title = next(
        ((status, title) for kind, status, title in ERRORS if isinstance(exc, kind)),
        (500, "Something went wrong"),
    )
    message = str(exc) if isinstance(exc, MailgateError | ConnectorError) else title
    if status == 503:
        logger.warning("engine unavailable on %s: %s", request.url.path, exc)
    for_browser = request.url.path == "/" or request.url.path.startswith(
        ("/decide", "/login", "/dashboard")
    )
    if routes.wants_json(request) or not for_browser:
        return JSONResponse({"error": message}, status_code=status)
    gateway: Gateway = request.app.state.gateway
    return gateway.render(
        request, "error.html", {"title": title, "message": message}, status_code=status
    )
