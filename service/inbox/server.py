"""Start and stop the reply listener on the process's own event loop.

aiosmtpd's threaded ``Controller`` would run a second loop; instead the protocol is served with
``loop.create_server`` so the handler shares the loop (and the Resonate client) of the rest of
the process. Stopping closes the listening socket first, lets replies already in DATA finish
(their 250 means "durable"), and tells idle sessions ``421`` so their MTAs come back later.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from typing import Any

from aiosmtpd.smtp import SMTP

from service.inbox.handler import ReplyHandler

logger = logging.getLogger(__name__)

INBOUND_MAX_BYTES_DEFAULT = 10 * 1024 * 1024
DRAIN_TIMEOUT_S = 30.0


class _Session(SMTP):
    """aiosmtpd's protocol, remembering its open sessions so shutdown can reach them."""

    def __init__(self, listener: InboxServer, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._listener = listener

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._listener.sessions.add(self)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        self._listener.sessions.discard(self)
        super().connection_lost(error)


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
    ) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.max_bytes = max_bytes
        self.hostname = hostname
        self.tls_context = tls_context
        self.sessions: set[_Session] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        if self._server is not None:
            return
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(self._protocol, self.host, self.port)
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

    def _protocol(self) -> _Session:
        return _Session(
            self,
            self.handler,
            data_size_limit=self.max_bytes,
            hostname=self.hostname,
            ident="Mailgate reply listener",
            tls_context=self.tls_context,
            require_starttls=False,
            enable_SMTPUTF8=True,
            decode_data=False,
        )
