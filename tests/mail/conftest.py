"""Fixtures of the mail tests: ``start_sink`` starts SMTP sinks on the test's own loop."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable

import pytest
from aiosmtpd.smtp import SMTP, AuthResult

from .smtp_sink import RecordingHandler, Sink, StartSink


@pytest.fixture
async def start_sink() -> AsyncIterator[StartSink]:
    servers: list[asyncio.Server] = []

    async def start(
        *,
        rcpt_replies: list[str] | None = None,
        data_replies: list[str] | None = None,
        port: int = 0,
        starttls: ssl.SSLContext | None = None,
        implicit_tls: ssl.SSLContext | None = None,
        authenticator: Callable[..., AuthResult] | None = None,
    ) -> Sink:
        handler = RecordingHandler(
            rcpt_replies=list(rcpt_replies or []), data_replies=list(data_replies or [])
        )

        def protocol() -> SMTP:
            return SMTP(
                handler,
                hostname="sink.test",
                tls_context=starttls,
                require_starttls=starttls is not None,
                authenticator=authenticator,
                auth_required=authenticator is not None,
                auth_require_tls=authenticator is not None,
            )

        loop = asyncio.get_running_loop()
        server = await loop.create_server(protocol, "127.0.0.1", port, ssl=implicit_tls)
        servers.append(server)
        return Sink(port=server.sockets[0].getsockname()[1], handler=handler)

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()
