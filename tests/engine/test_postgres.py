"""The Postgres engine's own repairs, on a real server: timers keep firing after an outage (the
connector's own driver stops for good at its first error), and the sessions reconnect."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta

import postgres
import psycopg
import pytest
from postgres import Postgres
from resonate.context import Context
from resonate.resonate import Resonate
from resonate.retry import Never

from service.engine.postgres import open_postgres, resonate_schema

pytestmark = pytest.mark.slow

SLEEP_S = 3


async def napper(ctx: Context) -> str:
    await ctx.sleep(timedelta(seconds=SLEEP_S))
    return "woke"


@pytest.fixture
def own_postgres() -> Iterator[Postgres]:
    server = postgres.running()
    yield server
    server.destroy()


def _state(url: str, promise_id: str) -> str | None:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT state FROM resonate.promises WHERE id = %s", (promise_id,))
        found = row.fetchone()
    return found[0] if found else None


async def test_a_timer_due_while_postgres_is_down_fires_once_it_is_back(own_postgres):
    url = own_postgres.new_database()
    engine = open_postgres(url, pid="w", group="workers", drive_timers=True)
    resonate = Resonate(
        network=engine.network,
        sources=[engine.connection],
        group="workers",
        pid="w",
        env={},
        retry_policy=Never(),
        autostart=False,
    )
    resonate.register(napper, name="napper")
    resonate.start()
    await engine.start()
    try:
        resonate.run("nap-1", napper)
        async with asyncio.timeout(10):
            while _state(url, "nap-1") != "pending":
                await asyncio.sleep(0.05)
        await asyncio.to_thread(own_postgres.stop, "immediate")
        await asyncio.sleep(SLEEP_S + 1)  # the timer comes due while Postgres is down
        await asyncio.to_thread(own_postgres.start)
        back = time.monotonic()
        async with asyncio.timeout(20):
            while _state(url, "nap-1") != "resolved":
                await asyncio.sleep(0.05)
        assert time.monotonic() - back < 10
        assert engine.timers is not None and engine.timers.fired >= 1
        assert (await resonate_schema(engine.sessions)).version == "0.1.0"
    finally:
        await resonate.stop()
        await engine.stop()
