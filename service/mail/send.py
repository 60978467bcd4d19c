"""The only outbound SMTP socket, and the line between "try again" and "give up".

Every email Mailgate sends leaves through ``Mailer.send``: the message is flattened here, with
our policy, and those bytes are DKIM-signed and handed to aiosmtplib as bytes. Handing it the
message object instead would let it flatten again with its own policy, which folds some subjects
before their first word (MailHog then shows none) and would break the signature.

aiosmtplib speaks the protocol; this module turns its many exceptions into Mailgate's two
outcomes. A 5xx answer about the recipient (RCPT) or the content (DATA) is the server's final
word on this message: ``DeliveryRejected`` fails the request. Everything about our side of the
conversation (no connection, a timeout, TLS, the login, the sender address, ``530`` "authenticate
first") and every 4xx can be fixed by waiting or by the operator, so it is
``TransientDeliveryError`` and the caller retries.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.utils import getaddresses, parseaddr
from typing import Any, Literal

import aiosmtplib

from service.errors import DeliveryRejected, MailgateError, Transient
from service.mail.signing import DkimSigner

SMTP_TIMEOUT_S_DEFAULT = 30.0
WIRE_POLICY = policy.SMTP
"""CRLF line ends, lines folded at 78 characters, non-ASCII headers as encoded words: with bodies
composed as quoted-printable, the bytes are 7-bit and no relay needs to convert (and so break
the signature of) them."""


class TransientDeliveryError(Transient):
    """The message was not delivered this time; trying again later may succeed."""


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: Literal["none", "starttls", "tls"] = "none"
    timeout_s: float = SMTP_TIMEOUT_S_DEFAULT
    ca_file: str | None = None
    """CA bundle that signs the server's certificate, for relays with a private CA."""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Mailer:
    """The way out for every email: flatten with our policy, sign, send those very bytes."""

    smtp: SmtpSettings
    signer: DkimSigner

    def wire(self, message: EmailMessage) -> bytes:
        return self.signer.sign(flatten(message))

    async def send(self, message: EmailMessage) -> bytes:
        """Deliver ``message`` to its To/Cc recipients; returns the bytes that were sent."""
        data = await asyncio.to_thread(self.wire, message)  # RSA signing takes milliseconds
        sender, recipients = _sender(message), _recipients(message)
        await _transmit(data, sender=sender, recipients=recipients, smtp=self.smtp)
        return data


def flatten(message: EmailMessage) -> bytes:
    return message.as_bytes(policy=WIRE_POLICY)


async def _transmit(data: bytes, *, sender: str, recipients: list[str], smtp: SmtpSettings) -> None:
    """Hand ``data`` to ``smtp`` unchanged (aiosmtplib only dot-stuffs it for the DATA phase)."""
    try:
        await aiosmtplib.send(
            data,
            sender=sender,
            recipients=recipients,
            username=smtp.user,
            password=smtp.password,
            timeout=smtp.timeout_s,
            **_connection(smtp),
        )
    except aiosmtplib.SMTPRecipientsRefused as exc:
        raise _refused_recipients(exc, smtp) from exc
    except aiosmtplib.SMTPDataError as exc:
        if _final(exc.code):
            msg = f"mail server {smtp.address} refused the message: {exc.code} {exc.message}"
            raise DeliveryRejected(msg) from exc
        raise _busy(exc, smtp) from exc
    except aiosmtplib.SMTPSenderRefused as exc:
        msg = (
            f"SMTP server {smtp.address} refused the sender {exc.sender}: {exc.code} {exc.message}"
        )
        raise TransientDeliveryError(msg) from exc
    except aiosmtplib.SMTPAuthenticationError as exc:
        msg = f"SMTP server {smtp.address} refused the login ({exc.code} {exc.message})"
        raise TransientDeliveryError(msg) from exc
    except aiosmtplib.SMTPResponseException as exc:
        raise _busy(exc, smtp) from exc
    except (aiosmtplib.SMTPTimeoutError, TimeoutError) as exc:
        msg = f"SMTP server {smtp.address} timed out"
        raise TransientDeliveryError(msg) from exc
    except (aiosmtplib.SMTPConnectError, aiosmtplib.SMTPServerDisconnected, OSError) as exc:
        msg = f"SMTP server {smtp.address} unreachable"
        raise TransientDeliveryError(msg) from exc
    except aiosmtplib.SMTPException as exc:
        msg = f"SMTP with {smtp.address} failed: {exc}"
        raise TransientDeliveryError(msg) from exc


async def smtp_reachable(smtp: SmtpSettings, timeout_s: float = 2.0) -> bool:
    """Whether the server greets us (through TLS, if configured) within ``timeout_s``."""
    client = aiosmtplib.SMTP(timeout=timeout_s, **_connection(smtp))
    try:
        await client.connect()
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        return False
    with contextlib.suppress(aiosmtplib.SMTPException, OSError, TimeoutError):
        await client.quit()
    return True


def _sender(message: EmailMessage) -> str:
    return parseaddr(str(message["From"]))[1]


def _recipients(message: EmailMessage) -> list[str]:
    fields = [str(value) for name in ("To", "Cc") for value in message.get_all(name, [])]
    return [address for _, address in getaddresses(fields) if address]


def _connection(smtp: SmtpSettings) -> dict[str, Any]:
    return {
        "hostname": smtp.host,
        "port": smtp.port,
        "use_tls": smtp.tls == "tls",
        "start_tls": smtp.tls == "starttls",
        "cert_bundle": smtp.ca_file,
    }


def _refused_recipients(exc: aiosmtplib.SMTPRecipientsRefused, smtp: SmtpSettings) -> MailgateError:
    permanent = [r for r in exc.recipients if _final(r.code)]
    if permanent:
        refusals = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in permanent)
        return DeliveryRejected(f"mail server {smtp.address} refused {refusals}")
    first = exc.recipients[0]
    return _busy(first, smtp)


def _final(code: int) -> bool:
    """5xx, except 530: "authenticate (or STARTTLS) first" is about us, not the message."""
    return code >= 500 and code != 530


def _busy(exc: aiosmtplib.SMTPResponseException, smtp: SmtpSettings) -> TransientDeliveryError:
    return TransientDeliveryError(f"SMTP server {smtp.address} answered {exc.code} {exc.message}")
