"""The only outbound SMTP socket, and the line between "try again" and "give up".

aiosmtplib speaks the protocol; this module turns its many exceptions into Mailgate's two
outcomes. A 5xx answer about the recipient (RCPT) or the content (DATA) is the server's final
word on this message: ``DeliveryRejected`` fails the request. Everything about our side of the
conversation (no connection, a timeout, TLS, the login, the sender address, ``530`` "authenticate
first") and every 4xx can be fixed by waiting or by the operator, so it is
``TransientDeliveryError`` and the caller retries.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Literal

import aiosmtplib

from service.errors import DeliveryRejected, MailgateError

SMTP_TIMEOUT_S_DEFAULT = 30.0


class TransientDeliveryError(MailgateError):
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


async def send(message: EmailMessage, smtp: SmtpSettings) -> None:
    """Deliver ``message`` to its To/Cc recipients through ``smtp``."""
    try:
        await aiosmtplib.send(
            message,
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
