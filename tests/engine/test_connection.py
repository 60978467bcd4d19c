"""Both engines (in memory, durable) drive real SDK workflows, with real heartbeats."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import msgspec
from engine_workflows import approval, suspended_approval
from resonate.connections import LocalConnection
from resonate.context import Context
from resonate.resonate import Resonate
from resonate.types import Value
from resonate_base.connections import Network, Source

from service.engine import EngineConnection, open_memory


def test_is_network_and_source_but_not_local_connection() -> None:
    conn = open_memory(pid="p1", group="workers")
    assert isinstance(conn, Network)
    assert isinstance(conn, Source)
    assert not isinstance(conn, LocalConnection)
    assert conn.unicast() == "poll://uni@workers/p1"
    assert conn.resolve_target("workers") == "poll://any@workers"


async def test_workflow_suspends_on_promise_and_completes_when_resolved(
    engine: EngineConnection, make_resonate
) -> None:
    resonate: Resonate = make_resonate(engine)
    resonate.register(approval)
    handle, child = await suspended_approval(resonate, "wf-1", 21)
    root = await resonate.promises.get("wf-1")
    assert root.state == "pending"
    await resonate.promises.resolve(child, Value(data="approve"))

    assert await asyncio.wait_for(handle.result(), 10) == {"doubled": 42, "decision": "approve"}
    assert (await resonate.promises.get("wf-1")).state == "resolved"


async def test_same_id_returns_the_same_execution(engine: EngineConnection, make_resonate) -> None:
    resonate: Resonate = make_resonate(engine)
    resonate.register(approval)
    first, child = await suspended_approval(resonate, "wf-same", 1)
    second = resonate.run("wf-same", approval, 999)
    await resonate.promises.resolve(child, Value(data="ok"))
    assert await asyncio.wait_for(first.result(), 10) == {"doubled": 2, "decision": "ok"}
    assert await asyncio.wait_for(second.result(), 10) == {"doubled": 2, "decision": "ok"}


async def test_step_longer_than_the_lease_runs_once(make_resonate) -> None:
    """Resonate heartbeats through this connection, so a lapsed lease never re-runs a step."""
    conn = open_memory(pid="p1", group="workers", tick_interval_s=0.1)
    await conn.start()
    calls: list[int] = []

    async def slow(ctx: Context) -> str:
        calls.append(1)
        await asyncio.sleep(2.5)
        return "done"

    async def flow(ctx: Context) -> str:
        return await ctx.run(slow)

    resonate: Resonate = make_resonate(conn, ttl=timedelta(seconds=1))
    resonate.register(flow)
    try:
        result = await asyncio.wait_for(resonate.run("wf-slow", flow).result(), 20)
    finally:
        await conn.stop()
    assert result == "done"
    assert calls == [1]


class Counting:
    """A ``Network`` that counts each kind of request on its way to the engine."""

    def __init__(self, conn: EngineConnection) -> None:
        self.conn = conn
        self.kinds: list[str] = []

    async def start(self) -> None:
        await self.conn.start()

    async def stop(self) -> None:
        await self.conn.stop()

    async def send(self, req: str, headers: dict[str, str] | None = None) -> str:
        self.kinds.append(msgspec.json.decode(req)["kind"])
        return await self.conn.send(req, headers)


async def test_a_sleep_is_not_offered_before_its_deadline(
    engine: EngineConnection, make_resonate
) -> None:
    """The SDK drops a durable sleep's task that arrives before the deadline and lets its
    lease lapse, so stock ``ServerState`` would hand it out again every lease term, forever:
    one acquire per lease per sleeping workflow (a deadline watcher per waiting request).
    The engine holds the task back; the deadline settles the promise and wakes the sleeper."""
    counting = Counting(engine)
    resonate: Resonate = make_resonate(counting, sources=[engine], ttl=timedelta(seconds=0.3))

    async def napping(ctx: Context) -> str:
        await ctx.sleep(timedelta(seconds=2))
        return "awake"

    resonate.register(napping)
    handle = resonate.run("wf-nap", napping)
    assert await asyncio.wait_for(handle.result(), 10) == "awake"
    assert counting.kinds.count("task.acquire") == 1  # the workflow's, once it wakes
