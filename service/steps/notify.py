"""How a person is asked: the Notifier seam and its console and SMTP peers.

The workflow only knows that a round must be asked about; whether that becomes a printed pair
of links or a real email is chosen once, in ``service.app``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from email.message import EmailMessage
from secrets import token_hex
from typing import Protocol, runtime_checkable

from service import retry
from service.domain import WORKFLOW_PREFIX, Ask, Notice
from service.ledger.ids import call_id
from service.mail.compose import compose_notice, compose_request, domain_of, message_id_for
from service.mail.send import Mailer
from service.retry import Retry, Sleep

logger = logging.getLogger(__name__)


@runtime_checkable
class Notifier(Protocol):
    name: str

    async def ask(self, ask: Ask) -> str | None:
        """Deliver the request (or its reminder: ``ask.reminder``) and return its Message-ID
        (None when it is no email); raise ``Permanent`` when it can never be delivered."""

    async def tell(self, notice: Notice) -> None:
        """Deliver a short note about a round; same delivery rules as ``ask``."""


class ConsoleNotifier:
    """Prints the decision link, like the example this service grew from."""

    name = "console"

    async def ask(self, ask: Ask) -> str | None:
        what = f"reminder {ask.reminder}: " if ask.reminder else ""
        print(
            f"\n[mailgate] {what}round {ask.round} of {ask.url} awaits {ask.approver}\n"
            f"  summary: {ask.summary[:300]}\n"
            f"  approve: {ask.decide_url}?verdict=approve\n"
            f"  reject:  {ask.decide_url}?verdict=reject\n",
            flush=True,
        )
        logger.info("asked %s about round %d of %s", ask.approver, ask.round, ask.url)
        return None

    async def tell(self, notice: Notice) -> None:
        print(f"\n[mailgate] to {notice.to}: {notice.subject}\n  {notice.text}\n", flush=True)


def epoch_ms() -> int:
    return time.time_ns() // 1_000_000


class SmtpNotifier:
    """Emails the request and keeps trying while the mail server is away or busy.

    A transient failure never fails the request: the round waits (``service.retry.SMTP``:
    unbounded, capped, jittered), ``on_retry`` says why (the workflow shows it as the request's
    status), and the cap keeps delivery resuming soon after the server does. A 5xx rejection
    propagates as ``DeliveryRejected``.
    """

    name = "smtp"

    def __init__(
        self,
        *,
        mailer: Mailer,
        sender: str,
        reply_domain: str | None,
        secrets: Sequence[str],
        clock: Callable[[], int] = epoch_ms,
        backoff_s: float = retry.SMTP.first_s,
        max_backoff_s: float = retry.SMTP.max_s,
        on_retry: Callable[[str], None] | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._mailer = mailer
        self._sender = sender
        self._reply_domain = reply_domain
        self._secrets = secrets
        self._clock = clock
        self._retry = replace(retry.SMTP, first_s=backoff_s, max_s=max_backoff_s)
        self._on_retry = on_retry
        self._sleep = sleep

    async def ask(self, ask: Ask) -> str | None:
        message = compose_request(
            ask,
            sender=self._sender,
            reply_domain=self._reply_domain,
            secrets=self._secrets,
            now=self._clock(),
        )
        await self._deliver(message)
        logger.info(
            "emailed %s about round %d of %s as %s%s",
            ask.approver,
            ask.round,
            ask.url,
            message["Message-ID"],
            f" (reminder {ask.reminder})" if ask.reminder else "",
        )
        return str(message["Message-ID"])

    async def tell(self, notice: Notice) -> None:
        domain = domain_of(self._sender)
        message = compose_notice(
            notice.to,
            notice.subject,
            notice.text,
            sender=self._sender,
            request_id=notice.request_id,
            in_reply_to=message_id_for(notice.round_id, domain),
            now=self._clock(),
            message_id=message_id_for(f"{notice.round_id}#{notice.kind}", domain),
        )
        await self._deliver(message)
        logger.info("emailed %s: %s", notice.to, notice.subject)

    async def _deliver(self, message: EmailMessage) -> None:
        await self._retry.run(
            lambda: self._mailer.send(message), sleep=self._sleep, on_retry=self._waiting
        )

    def _waiting(self, failure: Retry) -> None:
        error = failure.error
        logger.warning("%s, retrying in %.3gs (%s)", error, failure.delay_s, error.__cause__)
        if self._on_retry is not None:
            self._on_retry(f"{error}, retrying")


async def send_sample(
    to: str,
    *,
    mailer: Mailer,
    sender: str,
    reply_domain: str | None,
    secrets: Sequence[str],
    public_url: str,
) -> bytes:
    """Send one made-up request with the real settings: ``mailgate mail-test --to ADDRESS``.

    It is sent once, without retries, so the caller sees at once what the server said. Its
    links lead to the gateway but carry no valid token, and its reply address names no round.
    Returns the bytes sent, for a spam check.
    """
    now = epoch_ms()
    request_id = f"{WORKFLOW_PREFIX}{token_hex(10)}"
    promise_id = call_id(request_id, 1)
    ask = Ask(
        request_id=request_id,
        promise_id=promise_id,
        first_promise_id=promise_id,
        round=1,
        url="https://example.com/",
        approver=to,
        summary=(
            "This is a test message from `mailgate mail-test`. If you can read it, Mailgate's "
            "SMTP settings work.\n\nA real request shows the summary of the page here, with "
            "buttons to approve or reject it."
        ),
        previous_reason=None,
        decide_url=f"{public_url.rstrip('/')}/decide/mail-test",
        expires_at=now + 7 * 86_400_000,
    )
    message = compose_request(
        ask, sender=sender, reply_domain=reply_domain, secrets=secrets, now=now
    )
    subject = str(message["Subject"]).replace("[Mailgate]", "[Mailgate test]", 1)
    message.replace_header("Subject", subject)
    return await mailer.send(message)
