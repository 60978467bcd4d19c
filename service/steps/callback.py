"""Outcome callbacks: POST the final status to the submitter's URL, signed, until it lands.

The body is signed with HMAC-SHA256 under the newest ``MAILGATE_SECRET`` so the receiver can
check it came from us (``X-Mailgate-Signature: sha256=<hex>``). The URL passes the same SSRF
guard as pages and the connection goes to the address the guard checked. A refused URL is
final; no connection, a timeout, a resolver that cannot answer or a non-2xx answer is retried
under ``service.retry.CALLBACK`` (bounded, jittered backoff). The workflow checkpoints a
delivered callback, so an outcome is announced once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
from collections.abc import Sequence
from typing import Any

import httpx

from service import retry
from service.errors import BlockedUrl, HostNotFound, Permanent, Transient
from service.retry import Policy, Retry, Sleep
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
        policy: Policy = retry.CALLBACK,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.secret = secrets[-1]
        self.timeout_s = timeout_s
        self.allow_private = allow_private
        self.retry = policy
        self.sleep = sleep

    async def deliver(self, url: str, body: dict[str, Any]) -> None:
        payload = json.dumps(body, sort_keys=True).encode()
        headers = {
            "content-type": "application/json",
            SIGNATURE_HEADER: signature(payload, self.secret),
            "user-agent": "Mailgate/0.1 callback",
        }

        def failed(failure: Retry) -> None:
            logger.warning(
                "callback to %s failed (attempt %d): %s", url, failure.attempt, failure.error
            )

        try:
            await self.retry.run(
                lambda: self._attempt(url, payload, headers), sleep=self.sleep, on_retry=failed
            )
        except Transient as exc:
            tries = self.retry.attempts
            logger.warning("callback to %s failed (attempt %s): %s", url, tries, exc)
            raise CallbackFailed(f"callback to {url} failed {tries} times: {exc}") from exc
        logger.info("callback delivered to %s", url)

    async def _attempt(self, url: str, payload: bytes, headers: dict[str, str]) -> None:
        """Refusals by the guard are final; anything else that goes wrong is ``Transient``."""
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
                raise Transient(f"{type(exc).__name__}: {exc}") from exc
        if not 200 <= response.status_code < 300:
            raise Transient(f"HTTP {response.status_code}")
