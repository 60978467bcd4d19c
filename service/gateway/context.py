"""What every endpoint needs, built once by ``service.app`` and hung on the app's state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import Response
from starlette.templating import Jinja2Templates

from service import templating, tokens
from service.decisions import Decisions
from service.errors import MailgateError
from service.gateway import auth
from service.ledger import Ledger
from service.metrics import Metrics
from service.submissions import Policy

#: What a caller may say about itself (``mailgate`` sends ``cli``): kept as an untrusted hint.
CLIENT_HEADER = "x-mailgate-client"


class Unauthorized(MailgateError):
    pass


def pages() -> jinja2.Environment:
    environment = jinja2.Environment(loader=templating.loader("pages"), autoescape=True)
    environment.filters["when"] = when
    return environment


def when(epoch_ms: int) -> str:
    """A moment on the operator's pages; UTC, as in the logs, so the two can be matched."""
    return f"{datetime.fromtimestamp(epoch_ms / 1000, UTC):%Y-%m-%d %H:%M} UTC"


@dataclass
class Gateway:
    ledger: Ledger
    decisions: Decisions
    policy: Policy
    clock: Callable[[], int]
    secrets: tuple[str, ...]
    public_url: str
    link_ttl_s: float
    api_tokens: auth.ApiTokens
    metrics: Metrics
    workflow_version: int
    templates: Jinja2Templates

    @classmethod
    def create(cls, **kwargs: Any) -> Gateway:
        return cls(templates=Jinja2Templates(env=pages()), **kwargs)

    def principal(self, request: Request) -> str | None:
        return auth.principal(request, self.api_tokens, self.secrets, self.clock())

    def require_api(self, request: Request) -> str:
        """The caller's name (a token's name, or ``local`` where no token is configured)."""
        name = self.principal(request)
        if name is None:
            raise Unauthorized("missing or wrong bearer token (MAILGATE_API_TOKEN(S))")
        return name

    def verify_link(self, token: str) -> tokens.LinkToken:
        return tokens.verify(
            token, secrets=self.secrets, ttl_s=self.link_ttl_s, now_ms=self.clock()
        )

    def render(
        self,
        request: Request,
        name: str,
        context: dict[str, Any],
        status_code: int = 200,
    ) -> Response:
        return self.templates.TemplateResponse(
            request, name, {"now_ms": self.clock(), **context}, status_code=status_code
        )


def client_hint(request: Request) -> str | None:
    hint = request.headers.get(CLIENT_HEADER, "").strip()[:40]
    return hint or None


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"
