"""The durable engine keeps its promises across restarts, refuses bad files, forgets old work."""

from __future__ import annotations

import asyncio
import sqlite3
import sys
import textwrap
from pathlib import Path

import pytest
from engine_workflows import approval, pending_child, suspended_approval
from resonate.context import Context
from resonate.error import ServerError
from resonate.types import Value

from service.engine import (
    CorruptDatabase,
    DataDirLocked,
    EngineConnection,
    SchemaTooNew,
    open_durable,
)
from service.engine.routing import Listener
from service.engine.store import DB_FILE, SqliteStore

FAR = 1 << 62


async def test_suspended_workflow_survives_a_restart_and_completes(
    tmp_path: Path, make_resonate
) -> None:
    first = open_durable(tmp_path, pid="p1", group="workers")
    await first.start()
    resonate = make_resonate(first)
    resonate.register(approval)
    _, child = await suspended_approval(resonate, "wf-1", 21)
    await resonate.stop()
    await first.stop()

    second = open_durable(tmp_path, pid="p1", group="workers")
    await second.start()
    resonate = make_resonate(second)
    resonate.register(approval)
    handle = resonate.run("wf-1", approval, 21)
    assert (await resonate.promises.get(child)).state == "pending"
    await resonate.promises.resolve(child, Value(data="approve"))
    assert await asyncio.wait_for(handle.result(), 10) == {"doubled": 42, "decision": "approve"}
    await second.stop()


async def test_construction_opens_nothing(tmp_path: Path) -> None:
    open_durable(tmp_path / "dir", pid="p1", group="workers")
    assert not (tmp_path / "dir").exists()


async def test_second_engine_on_the_same_dir_is_refused_naming_the_holder(tmp_path: Path) -> None:
    first = open_durable(tmp_path, pid="p1", group="workers")
    await first.start()
    second = open_durable(tmp_path, pid="p2", group="workers")
    with pytest.raises(DataDirLocked) as refused:
        await second.start()
    assert refused.value.holder_pid == __import__("os").getpid()
    assert str(refused.value.holder_pid) in str(refused.value)
    await first.stop()
    await second.start()
    await second.stop()


@pytest.mark.slow
async def test_lock_held_by_another_process_dies_with_it(tmp_path: Path) -> None:
    holder_code = textwrap.dedent(
        f"""
        import asyncio, pathlib, sys
        from service.engine import open_durable
        async def main():
            conn = open_durable(pathlib.Path({str(tmp_path)!r}), pid="holder", group="g")
            await conn.start()
            print("ready", flush=True)
            await asyncio.sleep(60)
        asyncio.run(main())
        """
    )
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", holder_code, stdout=asyncio.subprocess.PIPE
    )
    try:
        assert holder.stdout is not None
        assert (await asyncio.wait_for(holder.stdout.readline(), 30)).strip() == b"ready"
        with pytest.raises(DataDirLocked) as refused:
            await open_durable(tmp_path, pid="p1", group="g").start()
        assert refused.value.holder_pid == holder.pid
        assert f"process {holder.pid}" in str(refused.value)
    finally:
        holder.kill()
        await holder.wait()
    conn = open_durable(tmp_path, pid="p1", group="g")
    await conn.start()
    await conn.stop()


async def test_garbage_file_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / DB_FILE).write_bytes(b"this is not a database at all" * 100)
    with pytest.raises(CorruptDatabase) as refused:
        await open_durable(tmp_path, pid="p1", group="g").start()
    assert str(tmp_path / DB_FILE) in str(refused.value)


async def test_empty_file_is_refused_not_started_empty(tmp_path: Path) -> None:
    (tmp_path / DB_FILE).write_bytes(b"")
    with pytest.raises(CorruptDatabase, match="empty"):
        await open_durable(tmp_path, pid="p1", group="g").start()


async def test_truncated_file_is_refused(tmp_path: Path, seeded) -> None:
    await seeded(tmp_path, count=200)
    path = tmp_path / DB_FILE
    size = path.stat().st_size
    with path.open("r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(CorruptDatabase) as refused:
        await open_durable(tmp_path, pid="p1", group="g").start()
    assert str(path) in str(refused.value)


async def test_a_restart_after_refusal_still_refuses_and_keeps_the_file(tmp_path: Path) -> None:
    path = tmp_path / DB_FILE
    path.write_bytes(b"junk" * 1000)
    for _ in range(2):
        with pytest.raises(CorruptDatabase):
            await open_durable(tmp_path, pid="p1", group="g").start()
    assert path.read_bytes() == b"junk" * 1000


async def test_newer_schema_is_refused(tmp_path: Path, seeded) -> None:
    await seeded(tmp_path, count=1)
    db = sqlite3.connect(tmp_path / DB_FILE)
    db.execute("INSERT INTO schema_migrations VALUES (999, '0999_future.sql', 0)")
    db.commit()
    db.close()
    with pytest.raises(SchemaTooNew) as refused:
        await open_durable(tmp_path, pid="p1", group="g").start()
    assert refused.value.found == 999
    assert "999" in str(refused.value)
    assert str(tmp_path / DB_FILE) in str(refused.value)


async def test_a_restart_reads_the_same_state_back_from_the_rows(
    tmp_path: Path, request_engine
) -> None:
    conn = open_durable(tmp_path, pid="p1", group="g")
    await conn.start()
    for i in range(100):
        await request_engine(conn, "promise.create", id=f"p{i}", timeoutAt=FAR, tags={"n": "1"})
        if i % 2:
            await request_engine(conn, "promise.settle", id=f"p{i}", state="resolved", value={})
    _, before = await request_engine(conn, "promise.search", limit=1000)
    await conn.stop()

    again = open_durable(tmp_path, pid="p1", group="g")
    await again.start()
    _, after = await request_engine(again, "promise.search", limit=1000)
    _, pending = await request_engine(again, "promise.search", state="pending", tags={"n": "1"})
    await again.stop()
    assert after == before
    assert len(after["promises"]) == 100
    assert [p["id"] for p in pending["promises"]] == sorted(f"p{i}" for i in range(0, 100, 2))


async def test_finished_workflows_are_deleted_after_retention(
    tmp_path: Path, make_resonate
) -> None:
    now = [1_000_000]
    calls: list[int] = []

    def counted(ctx: Context, n: int) -> int:
        calls.append(n)
        return n

    async def flow(ctx: Context, n: int) -> int:
        value = await ctx.run(counted, n)
        await ctx.promise()
        return value

    def build() -> EngineConnection:
        return EngineConnection(
            SqliteStore(tmp_path),
            pid="p1",
            group="workers",
            clock=lambda: now[0],
            tick_interval_s=0.05,
            retention_ms=60_000,
            retention_check_s=0.05,
        )

    conn = build()
    await conn.start()
    resonate = make_resonate(conn, clock=lambda: now[0])
    resonate.register(flow)
    done = resonate.run("wf-r", flow, 7)
    await resonate.promises.resolve(await pending_child(resonate, "wf-r"), Value(data=1))
    assert await asyncio.wait_for(done.result(), 10) == 7
    pending = resonate.run("wf-p", flow, 8)
    await pending_child(resonate, "wf-p")

    now[0] += 59_000
    await asyncio.sleep(0.3)
    assert (await resonate.promises.get("wf-r")).state == "resolved"
    now[0] += 2_000
    await asyncio.sleep(0.3)
    with pytest.raises(ServerError) as gone:
        await resonate.promises.get("wf-r")
    assert gone.value.code == 404
    assert (await resonate.promises.get("wf-p")).state == "pending"
    await resonate.promises.resolve(await pending_child(resonate, "wf-p"), Value(data=1))
    assert await asyncio.wait_for(pending.result(), 10) == 8
    await resonate.stop()
    await conn.stop()

    conn = build()
    await conn.start()
    resonate = make_resonate(conn, clock=lambda: now[0])
    resonate.register(flow)
    with pytest.raises(ServerError):
        await resonate.promises.get("wf-r")
    again = resonate.run("wf-r", flow, 9)
    await resonate.promises.resolve(await pending_child(resonate, "wf-r"), Value(data=1))
    assert await asyncio.wait_for(again.result(), 10) == 9
    assert calls == [7, 8, 9]
    await resonate.stop()
    await conn.stop()


async def test_leases_of_a_dead_run_are_released_at_start_others_get_a_term(
    tmp_path: Path, request_engine
) -> None:
    now = [1_000_000]
    target = "poll://any@workers"

    def build(pid: str) -> EngineConnection:
        return EngineConnection(
            SqliteStore(tmp_path),
            pid=pid,
            group="workers",
            clock=lambda: now[0],
            tick_interval_s=0.02,
        )

    conn = build("run-1")
    await conn.start()
    for task_id in ("mine", "theirs"):
        await request_engine(
            conn, "promise.create", id=task_id, timeoutAt=FAR, tags={"resonate:target": target}
        )
    await request_engine(conn, "task.acquire", id="mine", version=0, pid="run-1", ttl=600_000)
    await request_engine(conn, "task.acquire", id="theirs", version=0, pid="remote", ttl=5_000)
    await conn.stop()

    now[0] += 1_000
    conn = build("run-2")
    received: list[str] = []
    conn.attach(Listener("workers", "w1", received.append))
    await conn.start()
    status, mine = await request_engine(conn, "task.acquire", id="mine", version=1, pid="run-2")
    assert status == 200
    assert mine["task"]["version"] == 1
    assert any('"mine"' in m for m in received)
    assert not any('"theirs"' in m for m in received)
    status, _ = await request_engine(conn, "task.acquire", id="theirs", version=0, pid="x")
    assert status == 409
    now[0] += 4_000
    await request_engine(
        conn, "task.heartbeat", pid="remote", tasks=[{"id": "theirs", "version": 0}]
    )
    now[0] += 4_000
    await asyncio.sleep(0.1)
    assert not any('"theirs"' in m for m in received)
    now[0] += 2_000
    await asyncio.sleep(0.1)
    assert any('"theirs"' in m and '"version":1' in m for m in received)
    await conn.stop()
