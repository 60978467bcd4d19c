"""Factories for engine tests: started engines and ``Resonate`` instances wired to them."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from resonate.resonate import Resonate

from service.engine import EngineConnection, open_durable, open_memory


@pytest.fixture(params=["memory", "durable"])
async def engine(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[EngineConnection]:
    """A started engine of each kind: the contract tests run against both."""
    if request.param == "memory":
        conn = open_memory(pid="p1", group="workers")
    else:
        conn = open_durable(tmp_path / "data", pid="p1", group="workers")
    await conn.start()
    yield conn
    await conn.stop()


@pytest.fixture
async def make_resonate() -> AsyncIterator[Callable[..., Resonate]]:
    """Build ``Resonate`` instances over a given network; all are stopped at teardown."""
    made: list[Resonate] = []

    def make(network: Any = None, **kwargs: Any) -> Resonate:
        kwargs.setdefault("group", "workers")
        kwargs.setdefault("pid", "p1")
        kwargs.setdefault("ttl", timedelta(seconds=5))
        kwargs.setdefault("env", {})
        resonate = Resonate(network=network, **kwargs)
        made.append(resonate)
        return resonate

    yield make
    for resonate in made:
        await resonate.stop()


_corr = itertools.count()


async def engine_request(conn: Any, kind: str, **data: Any) -> tuple[int, dict[str, Any]]:
    """Send one protocol request envelope to ``conn``; return ``(status, data)``."""
    envelope = {
        "kind": kind,
        "head": {"corrId": f"t{next(_corr)}", "version": "2026-04-01"},
        "data": data,
    }
    response = msgspec.json.decode(await conn.send(msgspec.json.encode(envelope).decode()))
    return response["head"]["status"], response["data"]


@pytest.fixture
def request_engine() -> Callable[..., Any]:
    return engine_request


async def seed_engine(data_dir: Path, count: int = 50) -> None:
    """Create ``count`` pending promises with 200-byte payloads in a durable engine, and stop."""
    conn = open_durable(data_dir, pid="p1", group="g")
    await conn.start()
    for i in range(count):
        await engine_request(
            conn, "promise.create", id=f"p{i}", timeoutAt=1 << 62, param={"data": "x" * 200}
        )
    await conn.stop()


@pytest.fixture
def seeded() -> Callable[..., Any]:
    return seed_engine
