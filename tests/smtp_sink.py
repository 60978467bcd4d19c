"""A real SMTP server on loopback (aiosmtpd on the test's own loop) to send mail into.

The sink records every message it accepts, parsed with the stdlib ``email`` package, and can
be told to answer the first RCPTs or DATAs with scripted replies (451, 550), to hold its answer
to DATA or QUIT until released (so a sender can be killed with its message on the wire, or just
after the 250), to offer STARTTLS, to speak implicit TLS, or to require a login.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from service.mail.send import SmtpSettings


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage
    raw: bytes
    """The message as it came over the wire (after the DATA phase's dot-unstuffing)."""
    over_tls: bool
    login: str | None


@dataclass
class RecordingHandler:
    rcpt_replies: list[str] = field(default_factory=list)
    data_replies: list[str] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)
    rcpt_attempts: int = 0
    hold: str | None = None
    """``"DATA"`` or ``"QUIT"``: answer that command only once ``release`` is called. A held
    DATA whose sender is killed (its connection closed) before the release is not received."""
    holding: int = 0
    _released: asyncio.Event = field(default_factory=asyncio.Event)

    def release(self) -> None:
        self.hold = None
        self._released.set()
        self._released = asyncio.Event()

    async def _held(self, command: str) -> None:
        if self.hold == command:
            self.holding += 1
            await self._released.wait()

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        self.rcpt_attempts += 1
        if self.rcpt_replies:
            return self.rcpt_replies.pop(0)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await self._held("DATA")
        if self.data_replies:
            return self.data_replies.pop(0)
        assert isinstance(envelope.original_content, bytes)
        parsed = message_from_bytes(envelope.original_content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        login = session.auth_data.login.decode() if session.authenticated else None
        self.received.append(
            Received(
                mail_from=str(envelope.mail_from),
                rcpt_tos=list(envelope.rcpt_tos),
                message=parsed,
                raw=envelope.original_content,
                over_tls=session.ssl is not None
                or server.transport.get_extra_info("ssl_object") is not None,
                login=login,
            )
        )
        return "250 Message accepted for delivery"

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        await self._held("QUIT")
        return "221 Bye"


@dataclass
class Sink:
    port: int
    handler: RecordingHandler

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    def settings(self, **overrides: Any) -> SmtpSettings:
        return SmtpSettings(
            **{"host": "127.0.0.1", "port": self.port, "timeout_s": 5.0} | overrides
        )


StartSink = Callable[..., Awaitable[Sink]]


async def listen(
    handler: RecordingHandler,
    *,
    port: int = 0,
    implicit_tls: ssl.SSLContext | None = None,
    **smtp_options: Any,
) -> tuple[Sink, asyncio.Server]:
    """A sink on the running loop; ``smtp_options`` go to aiosmtpd's ``SMTP`` (TLS, login)."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="sink.test", **smtp_options),
        "127.0.0.1",
        port,
        ssl=implicit_tls,
    )
    return Sink(port=server.sockets[0].getsockname()[1], handler=handler), server


def free_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def password_checker(user: str, password: str) -> Callable[..., AuthResult]:
    def check(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == user.encode()
            and auth_data.password == password.encode()
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data if ok else None)

    return check
