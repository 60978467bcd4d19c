"""A ledger over a real engine, and requests started in it without a worker.

Every test that takes ``resonate``, ``ledger`` or ``make_ledger`` runs twice: on the embedded
engine in memory (the ``PromiseIndex``) and on Postgres with resonate-pg's schema (the
``PostgresIndex``), so the two indexes are held to one contract.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from resonate.resonate import Resonate

from service import engine
from service.domain import Request, workflow_id
from service.engine.postgres import Sessions, open_postgres
from service.ledger import Ledger
from service.ledger.index import Index, PromiseIndex
from service.ledger.postgres import PostgresIndex, migrate

SECRETS = ("ledger-test-secret-0123456789",)
_pages = itertools.count()


class Clock:
    """Real time, but never the same millisecond twice."""

    def __init__(self) -> None:
        self.now = time.time_ns() // 1_000_000

    def __call__(self) -> int:
        self.now = max(self.now + 1, time.time_ns() // 1_000_000)
        return self.now


@dataclass
class Engine:
    resonate: Resonate
    sessions: Sessions | None

    def index(self) -> Index:
        if self.sessions is None:
            return PromiseIndex(self.resonate)
        return PostgresIndex(self.sessions, self.resonate)


@pytest.fixture(params=["promises", "postgres"])
async def engine_under_test(request: pytest.FixtureRequest) -> AsyncIterator[Engine]:
    if request.param == "promises":
        conn = engine.open_memory(pid="p", group="gateway")
        await conn.start()
        client = Resonate(network=conn, group="gateway", pid="p", env={}, autostart=False)
        client.start()
        yield Engine(client, None)
        await client.stop()
        await conn.stop()
        return
    url = request.getfixturevalue("postgres_url")
    pg = open_postgres(url, pid="p", group="gateway", drive_timers=True)
    client = Resonate(network=pg.connection, group="gateway", pid="p", env={}, autostart=False)
    await migrate(pg.sessions)
    client.start()
    await pg.start()
    yield Engine(client, pg.sessions)
    await client.stop()
    await pg.stop()


@pytest.fixture
def resonate(engine_under_test: Engine) -> Resonate:
    return engine_under_test.resonate


@pytest.fixture
def make_ledger(engine_under_test: Engine) -> Callable[[], Ledger]:
    """Another ledger on the same engine, as another process would have."""

    def make() -> Ledger:
        return Ledger(
            engine_under_test.resonate,
            secrets=SECRETS,
            clock=Clock(),
            index=engine_under_test.index(),
        )

    return make


@pytest.fixture
def ledger(make_ledger: Callable[[], Ledger]) -> Ledger:
    return make_ledger()


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
