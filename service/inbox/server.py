"""Start and stop the reply listener on the process's own event loop, within its limits.

aiosmtpd's threaded ``Controller`` would run a second loop; instead the protocol is served with
``loop.create_server`` so the handler shares the loop (and the Resonate client) of the rest of
the process. Stopping closes the listening socket first, lets replies already in DATA finish
(their 250 means "durable"), and tells idle sessions ``421`` so their MTAs come back later.

The listener faces the internet (it is the reply domain's MX), so it bounds what one client can
hold, as Postfix does: sessions at once, in all and per address (more are told ``421`` and
closed before a greeting); the time the next command may take to arrive whole (aiosmtpd's
timeout restarts only on a complete command, so a client trickling one byte at a time is
dropped like an idle one, with ``421``), and the time a message may take after ``DATA``; how
often one session may repeat a command; the size of a message (``SIZE``); and how much MIME
structure a message may have before it is parsed (``inbox.bounds``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from service.inbox import bounds
from service.inbox.handler import ReplyHandler

logger = logging.getLogger(__name__)

INBOUND_MAX_BYTES_DEFAULT = 10 * 1024 * 1024
TIMEOUT_S_DEFAULT = 300.0
DATA_TIMEOUT_S_DEFAULT = 600.0
SESSIONS_MAX_DEFAULT = 500
SESSIONS_PER_ADDRESS_DEFAULT = 50
DRAIN_TIMEOUT_S = 30.0
#: Times one session may send each command. RFC 5321 §4.5.3.1.8 asks a server to take at least
#: 100 recipients; 20 messages (MAIL) per connection is more than an MTA sends to one reply
#: address, and caps how long NOOPs can keep a session open (20 × the command timeout).
COMMAND_CALLS = {"RCPT": 100, "*": 20}


class _Session(SMTP):
    """aiosmtpd's protocol, remembering its open sessions so shutdown can reach them, and
    turning away a session over the listener's limits before it starts."""

    def __init__(self, listener: InboxServer, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._listener = listener
        self.client_address = ""
        self._admitted = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        self.client_address = str(peer[0]) if peer else ""
        refusal = self._listener.admit(self.client_address)
        if refusal is not None:
            logger.warning(
                "refused a session from %s: %s",
                self.client_address,
                refusal,
                extra={"event": "inbox_session_refused", "address": self.client_address},
            )
            assert isinstance(transport, asyncio.WriteTransport)
            transport.write(refusal.encode() + b"\r\n")
            transport.close()
            return
        self._admitted = True
        self._listener.sessions.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if not self._admitted:
            return
        self._listener.sessions.discard(self)
        super().connection_lost(error)

    def data_received(self, data: bytes) -> None:
        if self._admitted:
            super().data_received(data)

    def eof_received(self) -> bool | None:
        return super().eof_received() if self._admitted else False

    async def smtp_DATA(self, arg: str) -> None:
        """The whole message, and the answer to it, within the DATA timeout."""
        self._reset_timeout(self._listener.data_timeout_s)
        await super().smtp_DATA(arg)

    def _timeout_cb(self) -> None:
        """Say why before hanging up, as RFC 5321 §4.5.3.2 asks (aiosmtpd just closes)."""
        transport = self.transport
        if isinstance(transport, asyncio.WriteTransport) and not transport.is_closing():
            transport.write(b"421 4.4.2 Timeout waiting for your command, closing\r\n")
        super()._timeout_cb()


class _Checked:
    """The reply handler behind the listener's structure bounds (``inbox.bounds``): a message
    too complex to parse safely is refused before the handler reads it. Every other hook is
    the handler's own (aiosmtpd finds hooks by ``dir``, hence ``__dir__``)."""

    def __init__(self, handler: ReplyHandler) -> None:
        self.handler = handler

    def __getattr__(self, name: str) -> Any:
        return getattr(self.handler, name)

    def __dir__(self) -> list[str]:
        hooks = [name for name in dir(self.handler) if name.startswith("handle_")]
        return sorted({*super().__dir__(), *hooks})

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        data = raw if isinstance(raw, bytes) else str(raw).encode()
        # Up to a few hundred ms of regular expressions over 10 MB: off the loop, as parsing is.
        refusal = await asyncio.to_thread(bounds.refusal, data)
        if refusal is None:
            return await self.handler.handle_DATA(server, session, envelope)
        self.handler.metrics.replies.labels("refused").inc()
        logger.info(
            "refused a reply to %s: %s",
            ", ".join(envelope.rcpt_tos),
            refusal,
            extra={"event": "reply_refused", "reason": refusal},
        )
        return refusal


class InboxServer:
    def __init__(
        self,
        handler: ReplyHandler,
        *,
        host: str,
        port: int,
        max_bytes: int = INBOUND_MAX_BYTES_DEFAULT,
        hostname: str | None = None,
        tls_context: ssl.SSLContext | None = None,
        timeout_s: float = TIMEOUT_S_DEFAULT,
        data_timeout_s: float = DATA_TIMEOUT_S_DEFAULT,
        max_sessions: int = SESSIONS_MAX_DEFAULT,
        sessions_per_address: int = SESSIONS_PER_ADDRESS_DEFAULT,
    ) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.max_bytes = max_bytes
        self.hostname = hostname
        self.tls_context = tls_context
        self.timeout_s = timeout_s
        self.data_timeout_s = data_timeout_s
        self.max_sessions = max_sessions
        self.sessions_per_address = sessions_per_address
        self.sessions: set[_Session] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        if self._server is not None:
            return
        loop = asyncio.get_running_loop()
        # A burst of up to max_sessions connections is greeted (or told 421) at once rather
        # than left in the kernel's accept queue (asyncio's default is 100).
        self._server = await loop.create_server(
            self._protocol, self.host, self.port, backlog=self.max_sessions
        )
        self.port = self._server.sockets[0].getsockname()[1]
        logger.info(
            "reply listener on smtp://%s:%d (max %d bytes%s)",
            self.host,
            self.port,
            self.max_bytes,
            ", STARTTLS" if self.tls_context else "",
        )

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        self._server = None
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_TIMEOUT_S):
                while self.handler.in_flight:
                    await asyncio.sleep(0.05)
        for session in list(self.sessions):
            transport = session.transport
            if transport is not None and not transport.is_closing():
                with contextlib.suppress(Exception):
                    await session.push("421 4.3.2 Service shutting down, try again later")
                transport.close()

    def admit(self, address: str) -> str | None:
        """The ``421`` line for a session over the limits, or None to serve it."""
        if len(self.sessions) >= self.max_sessions:
            return "421 4.3.2 Too many connections, try again later"
        held = sum(1 for session in self.sessions if session.client_address == address)
        if held >= self.sessions_per_address:
            return "421 4.7.0 Too many connections from your address, try again later"
        return None

    def _protocol(self) -> _Session:
        return _Session(
            self,
            _Checked(self.handler),
            data_size_limit=self.max_bytes,
            timeout=self.timeout_s,
            command_call_limit=COMMAND_CALLS,
            hostname=self.hostname,
            ident="Mailgate reply listener",
            tls_context=self.tls_context,
            require_starttls=False,
            enable_SMTPUTF8=True,
            decode_data=False,
        )
