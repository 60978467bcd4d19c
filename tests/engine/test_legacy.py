"""A data dir in the old journal format (snapshot + journal tail) becomes rows at first start."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from service.engine import CorruptDatabase, open_durable
from service.engine.store import DB_FILE, SqliteStore

FIXTURE = Path(__file__).parents[1] / "fixtures" / "engine-journal-datadir"
WRITTEN_AT_MS = 1_800_000_063_000


@pytest.fixture
def legacy_dir(tmp_path: Path) -> Path:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    shutil.copy(FIXTURE / DB_FILE, data_dir / DB_FILE)
    return data_dir


def durable_view(data_dir: Path) -> dict[str, object]:
    store = SqliteStore(data_dir)
    state = store.open().state
    try:
        view = {
            "promises": {
                i: [p.to_record(), sorted(p.awaiters), sorted(p.subscribers)]
                for i, p in state.promises.items()
            },
            "tasks": {
                i: [t.state, t.version, t.pid, sorted(t.resumes)] for i, t in state.tasks.items()
            },
            "timers": [list(timer) for timer in state.promises.timers()],
        }
    finally:
        store.close()
    return json.loads(json.dumps(view))


def legacy_rows(data_dir: Path) -> tuple[int, int]:
    db = sqlite3.connect(data_dir / DB_FILE)
    try:
        return (
            db.execute("SELECT count(*) FROM journal").fetchone()[0],
            db.execute("SELECT count(*) FROM snapshot").fetchone()[0],
        )
    finally:
        db.close()


def test_the_fixture_is_in_the_old_format(legacy_dir: Path) -> None:
    assert legacy_rows(legacy_dir) == (27, 1)


def test_conversion_reads_back_what_the_old_engine_read(legacy_dir: Path) -> None:
    expected = json.loads((FIXTURE / "state.json").read_text())
    assert durable_view(legacy_dir) == expected
    assert legacy_rows(legacy_dir) == (0, 0)
    assert durable_view(legacy_dir) == expected


async def test_a_converted_engine_serves_and_finishes_its_waiting_workflow(
    legacy_dir: Path, request_engine
) -> None:
    conn = open_durable(legacy_dir, pid="new", group="workers", clock=lambda: WRITTEN_AT_MS)
    await conn.start()
    status, found = await request_engine(conn, "promise.search", tags={"batch": "a"}, limit=100)
    assert status == 200
    assert [p["id"] for p in found["promises"]] == [
        "late",
        "p02",
        "p04",
        "p08",
        "p10",
        "p14",
        "p16",
        "p20",
        "p22",
        "p26",
        "p28",
    ]
    status, _ = await request_engine(
        conn, "promise.settle", id="wf-a:1", state="resolved", value={"data": "approve"}
    )
    assert status == 200
    status, task = await request_engine(conn, "promise.get", id="wf-a")
    assert task["promise"]["state"] == "pending"
    await conn.stop()
    again = SqliteStore(legacy_dir).open()
    assert again.state.tasks["wf-a"].state == "pending"
    assert again.state.tasks["wf-a"].resumes == {"wf-a:1"}
    assert again.state.promises["wf-a:1"].awaiters == set()


def test_a_damaged_journal_entry_refuses_to_start_and_converts_nothing(legacy_dir: Path) -> None:
    db = sqlite3.connect(legacy_dir / DB_FILE)
    db.execute("UPDATE journal SET body = x'00ff' WHERE seq = (SELECT max(seq) FROM journal)")
    db.commit()
    db.close()
    with pytest.raises(CorruptDatabase) as refused:
        SqliteStore(legacy_dir).open()
    assert "journal entry" in str(refused.value)
    assert legacy_rows(legacy_dir) == (27, 1)
