"""Outcome callbacks: POST the final status to the submitter's URL, signed, until it lands.

The body is signed with HMAC-SHA256 under the newest ``MAILGATE_SECRET`` so the receiver can
check it came from us (``X-Mailgate-Signature: sha256=<hex>``). The URL passes the same SSRF
guard as pages and the connection goes to the address the guard checked. Delivery is retried
with capped backoff for a bounded time; the workflow checkpoints a delivered callback, so an
outcome is announced once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx

from service.errors import BlockedUrl, HostNotFound, Permanent
from service.steps import guard

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Mailgate-Signature"


def signature(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class CallbackFailed(Permanent):
    """The receiver never accepted the callback within the retry budget."""


class CallbackSender:
    def __init__(
        self,
        *,
        secrets: Sequence[str],
        timeout_s: float,
        allow_private: bool,
        attempts: int = 8,
        backoff_s: float = 1.0,
        max_backoff_s: float = 300.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.secret = secrets[-1]
        self.timeout_s = timeout_s
        self.allow_private = allow_private
        self.attempts = attempts
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.sleep = sleep

    async def deliver(self, url: str, body: dict[str, Any]) -> None:
        payload = json.dumps(body, sort_keys=True).encode()
        headers = {
            "content-type": "application/json",
            SIGNATURE_HEADER: signature(payload, self.secret),
            "user-agent": "Mailgate/0.1 callback",
        }
        delay = self.backoff_s
        for attempt in range(1, self.attempts + 1):
            problem = await self._attempt(url, payload, headers)
            if problem is None:
                logger.info("callback delivered to %s", url)
                return
            logger.warning("callback to %s failed (attempt %d): %s", url, attempt, problem)
            if attempt < self.attempts:
                await self.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)
        raise CallbackFailed(f"callback to {url} failed {self.attempts} times")

    async def _attempt(self, url: str, payload: bytes, headers: dict[str, str]) -> str | None:
        """None on success, else why it failed; refusals by the guard are final."""
        try:
            destination = await guard.check_url(url, allow_private=self.allow_private)
        except (BlockedUrl, HostNotFound) as exc:
            raise CallbackFailed(f"callback URL refused: {exc}") from exc
        async with httpx.AsyncClient(
            timeout=self.timeout_s, follow_redirects=False, trust_env=False
        ) as client:
            request = guard.pinned_request(
                client,
                "POST",
                destination,
                destination.addresses[0],
                headers=headers,
                content=payload,
            )
            try:
                response = await client.send(request)
            except httpx.TransportError as exc:
                return f"{type(exc).__name__}: {exc}"
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"
