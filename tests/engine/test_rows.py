"""What the row store adds: WAL copied into the file off the loop, cheap checks at the start of
a big file (the full one in the background), and a durable sleep that costs nothing at start."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
from resonate.context import Context

from service.engine import CorruptDatabase, open_durable, store
from service.engine.store import DB_FILE

FAR = 1 << 62


async def wait_until(condition, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.05)


def rows_in_the_file(path: Path) -> int:
    """Promises in the database file itself, the WAL ignored (``immutable`` reads only the file)."""
    db = sqlite3.connect(f"file:{path}?immutable=1", uri=True)
    try:
        return db.execute("SELECT count(*) FROM promises").fetchone()[0]
    finally:
        db.close()


async def test_the_checkpoint_thread_copies_commits_into_the_file(
    tmp_path: Path, request_engine
) -> None:
    conn = open_durable(tmp_path, pid="p1", group="g")
    await conn.start()
    for i in range(300):
        status, _ = await request_engine(conn, "promise.create", id=f"p{i}", timeoutAt=FAR)
        assert status == 201
    await wait_until(lambda: rows_in_the_file(tmp_path / DB_FILE) == 300)
    await conn.stop()


async def test_a_big_truncated_file_is_refused_without_a_full_check(
    tmp_path: Path, seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store, "QUICK_CHECK_AT_START_MAX_BYTES", 0)
    await seeded(tmp_path, 300)
    path = tmp_path / DB_FILE
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size - 4096)
    with pytest.raises(CorruptDatabase) as refused:
        await open_durable(tmp_path, pid="p1", group="g").start()
    assert str(path) in str(refused.value)


async def test_damage_inside_a_big_file_is_reported_by_the_checkpoint_thread(
    tmp_path: Path,
    seeded,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(store, "QUICK_CHECK_AT_START_MAX_BYTES", 0)
    await seeded(tmp_path, 300)
    path = tmp_path / DB_FILE
    db = sqlite3.connect(path)
    root = db.execute(
        "SELECT rootpage FROM sqlite_schema WHERE name = 'promises_pending'"
    ).fetchone()
    page_size = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    with path.open("r+b") as f:
        f.seek((root[0] - 1) * page_size)
        f.write(b"\xff" * page_size)
    caplog.set_level(logging.INFO, logger="service.engine.store")
    conn = open_durable(tmp_path, pid="p1", group="g")
    await conn.start()
    await wait_until(lambda: "is damaged" in caplog.text)
    assert str(path) in caplog.text
    await conn.stop()


async def test_a_sleep_needs_no_timer_after_a_restart_and_still_wakes(
    tmp_path: Path, make_resonate
) -> None:
    now = [10_000_000]

    async def napping(ctx: Context) -> str:
        await ctx.sleep(timedelta(minutes=5))
        return "awake"

    def engine():
        return open_durable(
            tmp_path, pid="p1", group="workers", clock=lambda: now[0], tick_interval_s=0.02
        )

    first = engine()
    await first.start()
    resonate = make_resonate(first, clock=lambda: now[0])
    resonate.register(napping)
    resonate.run("wf-nap", napping)
    await wait_until(lambda: any(t.state == "suspended" for t in first._state.tasks.values()))
    await resonate.stop()
    await first.stop()

    second = engine()
    await second.start()
    sleeps = [t.id for t in second._state.tasks.values() if t.state == "pending"]
    assert len(sleeps) == 1
    assert [t.id for t in second._state.tasks.active()] == []
    resonate = make_resonate(second, clock=lambda: now[0])
    resonate.register(napping)
    handle = resonate.run("wf-nap", napping)
    now[0] += 5 * 60_000
    assert await asyncio.wait_for(handle.result(), 10) == "awake"
    await second.stop()


async def test_the_wal_stays_bounded_under_steady_writes(
    tmp_path: Path, request_engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint racing with commits never completes; the writer's own finishes it."""
    monkeypatch.setattr(store, "WAL_AUTOCHECKPOINT_PAGES", 200)
    monkeypatch.setattr(store, "WAL_SIZE_LIMIT_BYTES", 1024 * 1024)
    conn = open_durable(tmp_path, pid="p1", group="g")
    await conn.start()
    wal = tmp_path / (DB_FILE + "-wal")
    biggest = 0
    for batch in range(60):
        await asyncio.gather(
            *(
                request_engine(
                    conn,
                    "promise.create",
                    id=f"p{batch}-{i}",
                    timeoutAt=FAR,
                    param={"x": "y" * 2000},
                )
                for i in range(50)
            )
        )
        biggest = max(biggest, wal.stat().st_size)
    await conn.stop()
    assert rows_in_the_file(tmp_path / DB_FILE) == 3000
    assert biggest < 4 * 1024 * 1024
