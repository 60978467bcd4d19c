"""Fixture factories for the real things tests talk to; each test builds the world it needs."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import ARTICLE, CallbackSink, PageServer, RecordingNotifier, Running

from service import config
from service.app import Mailgate, Roles
from service.testing import FakeOllama


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

    async def start(**overrides: str) -> Running:
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
        app = Mailgate(config.load(env), Roles(worker=True, gateway=True), notifier=notifier)
        await app.start()
        client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}", timeout=30)
        started.append(Running(app, client, notifier))
        return started[-1]

    yield start
    for running in started:
        await running.client.aclose()
        await running.app.stop()
