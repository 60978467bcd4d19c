"""Fixture factories for the real things tests talk to; each test builds the world it needs."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import postgres
import pytest
from aiosmtpd.smtp import AuthResult
from postgres import Postgres
from smtp_sink import RecordingHandler, Sink, StartSink, listen
from support import (
    ARTICLE,
    REPLY_DOMAIN,
    CallbackSink,
    PageServer,
    RecordingNotifier,
    Running,
    StartListener,
)

from service import config
from service.app import Mailgate, Roles
from service.testing import FakeOllama


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--screenshots",
        metavar="DIR",
        type=Path,
        help="keep the browser tests' screenshots in DIR (`--screenshots docs` refreshes the "
        "README's pictures); by default they go to each test's temporary directory",
    )


@pytest.fixture
def screenshots(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    chosen: Path | None = request.config.getoption("--screenshots")
    return tmp_path if chosen is None else chosen


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Postgres]:
    """One Postgres for the whole run (started on first use); each test takes a database."""
    server = postgres.running()
    yield server
    server.destroy()


@pytest.fixture
def postgres_url(postgres_server: Postgres) -> str:
    """A fresh database with resonate-pg's schema (Mailgate's tables not yet made)."""
    return postgres_server.new_database()


@pytest.fixture
def page_server() -> Iterator[PageServer]:
    server = PageServer()
    server.start()
    server.add("/article", ARTICLE)
    yield server
    server.stop()


@pytest.fixture
def callback_sink() -> Iterator[CallbackSink]:
    sink = CallbackSink()
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllama]:
    with FakeOllama() as fake:
        yield fake


@pytest.fixture
async def start_mailgate(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Start Mailgate in-process (engine, worker, gateway); overrides are env values."""
    started: list[Running] = []

    async def start(*, recording: bool = True, **overrides: str) -> Running:
        env = {
            "MAILGATE_DATA_DIR": str(tmp_path / f"data{len(started)}"),
            "MAILGATE_HTTP_PORT": "0",
            "MAILGATE_ENGINE": "memory",
            "MAILGATE_SUMMARIZER": "extractive",
            "MAILGATE_ALLOW_PRIVATE_URLS": "1",
            "MAILGATE_SECRET": "test-secret",
            **overrides,
        }
        notifier = RecordingNotifier()
        app = Mailgate(
            config.load(env),
            Roles(worker=True, gateway=True, inbox=True),
            notifier=notifier if recording else None,
        )
        await app.start()
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}", timeout=30)
        started.append(Running(app, client, notifier))
        return started[-1]

    yield start
    for running in started:
        await running.client.aclose()
        await running.app.stop()


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
        sink, server = await listen(
            handler,
            port=port,
            implicit_tls=implicit_tls,
            tls_context=starttls,
            require_starttls=starttls is not None,
            authenticator=authenticator,
            auth_required=authenticator is not None,
            auth_require_tls=authenticator is not None,
        )
        servers.append(server)
        return sink

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


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
