"""Who may use the API and the dashboard, and under which name.

API tokens are named (``MAILGATE_API_TOKENS=ops:…,ci:…``; the single ``MAILGATE_API_TOKEN`` is
named ``api``), so the audit trail can say which token submitted or decided: the name is the
authenticated principal, never anything the caller writes in a body. API calls carry a token
as a bearer token; a browser presents it once on the login page, after which a signed HttpOnly
session cookie carrying the token's name stands in for it. Without any token (loopback only)
every caller is ``local``. ``/decide/*`` never passes through here: its signed token is the
whole authorization.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from starlette.requests import Request

from service import tokens
from service.errors import BadToken

SESSION_COOKIE = "mailgate_session"
SESSION_TTL_S = 7 * 86400
LOCAL = "local"


class ApiTokens:
    def __init__(self, named: Sequence[tuple[str, str]]) -> None:
        self._named = tuple(named)

    @property
    def required(self) -> bool:
        return bool(self._named)

    def name_of(self, candidate: str) -> str | None:
        """The token's name; every configured token is compared, in constant time each."""
        found = None
        for name, token in self._named:
            if hmac.compare_digest(candidate.encode(), token.encode()):
                found = name
        return found


def principal(
    request: Request, api_tokens: ApiTokens, secrets: tuple[str, ...], now_ms: int
) -> str | None:
    """The caller's name, or None when the API refuses it."""
    if not api_tokens.required:
        return LOCAL
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and (name := api_tokens.name_of(credentials.strip())):
        return name
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        return None
    try:
        return tokens.verify_session(cookie, secrets=secrets, ttl_s=SESSION_TTL_S, now_ms=now_ms)
    except BadToken:
        return None


def cookies_secure(request: Request, public_url: str) -> bool:
    """Whether the session cookie is marked Secure: when people reach the gateway over HTTPS,
    which MAILGATE_PUBLIC_URL says (a proxy terminating TLS talks plain HTTP to the gateway),
    or this very request came over it (directly, or as a trusted proxy's X-Forwarded-Proto
    says)."""
    return public_url.startswith("https://") or request.url.scheme == "https"
