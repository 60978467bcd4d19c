"""Limits on failed attempts per client address: guessed decision links, wrong credentials.

A signed link or an API token is not guessed in any number of tries that matters, but every
try costs a verification, fills the logs, and a credential list tried against the login form is
how stuffing works. So each client address has a token bucket per kind of attempt, and only a
*failure* (a link that does not verify, a credential refused with 401) takes from it; an
address whose bucket is empty gets ``429`` with ``Retry-After`` for that kind of attempt until it
refills, whatever it sends. Success costs nothing, so an approver's clicks, a mail scanner's
prefetches and an API client's calls never meet the limit.

The address is the one uvicorn reports: the peer's, or the one a trusted proxy forwarded
(MAILGATE_TRUSTED_PROXIES), never a header a client could write. IPv6 clients are counted per
/64, the block one subscriber usually holds. Attempts already in flight when a bucket empties
still finish, so an address can overshoot by as many requests as it has in flight at that
moment.

Why not the ``limits`` library: its in-memory storage starts a thread (or an asyncio task and a
thread hop) on every hit to expire old counters, and reads the wall clock itself; this bucket
is a dict entry per address, read with the time it is given, and bounded in size.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.durations import Rate
from service.errors import MailgateError
from service.gateway.auth import SESSION_COOKIE
from service.gateway.body_limit import Refuse

logger = logging.getLogger(__name__)

#: Addresses remembered per kind; past it the least recently seen is forgotten (a forgotten
#: bucket is a full one, so only an address that stopped trying can gain from it).
ADDRESSES_MAX = 65_536


class TooManyAttempts(MailgateError):
    def __init__(self, what: str, retry_after_s: float) -> None:
        self.retry_after_s = max(1, math.ceil(retry_after_s))
        super().__init__(f"too many {what} from your address; try again in {self.retry_after_s} s")


class Buckets:
    """One token bucket per key: ``rate.count`` tokens, refilled evenly over ``rate.per_s``."""

    def __init__(self, rate: Rate, max_keys: int = ADDRESSES_MAX) -> None:
        self.rate = rate
        self.max_keys = max_keys
        self._levels: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def wait(self, key: str, now: float) -> float:
        """Seconds until ``key`` may try again; 0 when it may now."""
        tokens = self._level(key, now)
        return 0.0 if tokens >= 1 else (1 - tokens) * self.rate.per_s / self.rate.count

    def spend(self, key: str, now: float) -> float:
        """Take one token for a failure; the tokens left."""
        tokens = max(0.0, self._level(key, now) - 1)
        self._levels[key] = (tokens, now)
        self._levels.move_to_end(key)
        while len(self._levels) > self.max_keys:
            self._levels.popitem(last=False)
        return tokens

    def _level(self, key: str, now: float) -> float:
        found = self._levels.get(key)
        if found is None:
            return float(self.rate.count)
        tokens, at = found
        refilled = tokens + max(0.0, now - at) * self.rate.count / self.rate.per_s
        if refilled >= self.rate.count:
            del self._levels[key]
            return float(self.rate.count)
        return refilled


@dataclass(frozen=True)
class Rule:
    """Which requests are attempts of one kind, and which answers mean the attempt failed."""

    what: str
    applies: Callable[[Request], bool]
    failures: frozenset[int]
    buckets: Buckets


def rules(*, link_failures: Rate, credential_failures: Rate) -> list[Rule]:
    return [
        Rule(
            "invalid decision links",
            lambda request: request.url.path.startswith("/decide/"),
            frozenset({403}),
            Buckets(link_failures),
        ),
        Rule(
            "wrong credentials",
            presents_credentials,
            frozenset({401}),
            Buckets(credential_failures),
        ),
    ]


def presents_credentials(request: Request) -> bool:
    """A bearer token, a session cookie, or the login form: a request without any of them is
    not guessing anything, so its 401 costs nothing (a scraper missing its token cannot lock
    the operator out)."""
    if "authorization" in request.headers or SESSION_COOKIE in request.cookies:
        return True
    return request.url.path == "/login" and request.method == "POST"


def client_key(request: Request) -> str:
    host = request.client.host if request.client else ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


class Throttle:
    def __init__(
        self,
        app: ASGIApp,
        *,
        rules: Sequence[Rule],
        refuse: Refuse,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self.rules = rules
        self.refuse = refuse
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        rule = next((r for r in self.rules if r.applies(request)), None)
        if rule is None:
            await self.app(scope, receive, send)
            return
        key = client_key(request)
        wait = rule.buckets.wait(key, self.clock())
        if wait > 0:
            refusal = TooManyAttempts(rule.what, wait)
            response = await self.refuse(request, refusal)
            response.headers["Retry-After"] = str(refusal.retry_after_s)
            await response(scope, receive, send)
            return
        status = 0

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        await self.app(scope, receive, watched)
        if status in rule.failures and rule.buckets.spend(key, self.clock()) < 1:
            logger.warning(
                "%s from %s: refused for %.0f s from now",
                rule.what,
                key,
                rule.buckets.wait(key, self.clock()),
                extra={"event": "throttled", "address": key},
            )
