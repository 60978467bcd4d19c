"""A ledger over a real engine (in memory), and requests started in it without a worker."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from typing import Any

import pytest
from resonate.resonate import Resonate

from service import engine
from service.domain import Request, workflow_id
from service.ledger import Ledger

SECRETS = ("ledger-test-secret-0123456789",)
_pages = itertools.count()


class Clock:
    """Real time, but never the same millisecond twice."""

    def __init__(self) -> None:
        self.now = time.time_ns() // 1_000_000

    def __call__(self) -> int:
        self.now = max(self.now + 1, time.time_ns() // 1_000_000)
        return self.now


@pytest.fixture
async def resonate() -> AsyncIterator[Resonate]:
    conn = engine.open_memory(pid="p", group="gateway")
    await conn.start()
    client = Resonate(network=conn, group="gateway", pid="p", env={}, autostart=False)
    client.start()
    yield client
    await client.stop()
    await conn.stop()


@pytest.fixture
def ledger(resonate: Resonate) -> Ledger:
    return Ledger(resonate, secrets=SECRETS, clock=Clock())


@pytest.fixture
def new_request(ledger: Ledger) -> Callable[..., Any]:
    """Start a request (its root and ``submitted`` event); no worker runs it."""

    async def start(approver: str = "alice@example.com", generation: int = 1, **fields: Any):
        url = fields.pop("url", f"https://example.com/page-{next(_pages)}")
        request = Request(url, (approver,), None, ledger.clock(), "local", None, f"n{next(_pages)}")
        request_id = workflow_id(url, approver, generation)
        await ledger.start(request_id, request, timeout=timedelta(days=1), version=2)
        return request_id, request

    return start
