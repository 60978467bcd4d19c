"""Fixtures the listener tests share."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from smtp_sink import Sink, StartSink
from support import REPLY_DOMAIN, Running, StartListener


@pytest.fixture
def start_listener(start_mailgate: Callable[..., Any], start_sink: StartSink) -> StartListener:
    """Mailgate that mails its asks to a fresh sink and listens for the replies on a free port;
    overrides are env values."""

    async def start(**overrides: str) -> tuple[Running, Sink]:
        sink = await start_sink()
        mailgate = await start_mailgate(
            recording=False,
            MAILGATE_NOTIFIER="smtp",
            MAILGATE_SMTP_PORT=str(sink.port),
            MAILGATE_REPLY_DOMAIN=REPLY_DOMAIN,
            MAILGATE_FROM=f"Mailgate <mailgate@{REPLY_DOMAIN}>",
            MAILGATE_INBOUND_PORT="0",
            **overrides,
        )
        return mailgate, sink

    return start
