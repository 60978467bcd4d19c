"""Who may use the API and the dashboard.

With ``MAILGATE_API_TOKEN`` set, API calls carry it as a bearer token and a browser presents it
once on the login page, after which a signed HttpOnly session cookie stands in for it.
``/decide/*`` never passes through here: its signed token is the whole authorization.
"""

from __future__ import annotations

import hmac

from starlette.requests import Request

from service import tokens
from service.errors import BadToken

SESSION_COOKIE = "mailgate_session"
SESSION_TTL_S = 7 * 86400


def bearer_ok(request: Request, api_token: str) -> bool:
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and token_matches(credentials.strip(), api_token)


def session_ok(request: Request, secrets: tuple[str, ...], now_ms: int) -> bool:
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return False
    try:
        tokens.verify_session(cookie, secrets=secrets, ttl_s=SESSION_TTL_S, now_ms=now_ms)
    except BadToken:
        return False
    return True


def authorized(
    request: Request, api_token: str | None, secrets: tuple[str, ...], now_ms: int
) -> bool:
    if api_token is None:
        return True
    return bearer_ok(request, api_token) or session_ok(request, secrets, now_ms)


def token_matches(candidate: str, api_token: str) -> bool:
    return hmac.compare_digest(candidate.encode(), api_token.encode())
