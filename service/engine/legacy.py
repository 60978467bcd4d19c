"""Data dirs written before the engine kept rows: one msgpack snapshot plus a journal tail.

Until schema 0002 the engine kept its whole state in memory, wrote it as one snapshot now and
then, and journaled every request after it (``apply``: the request as it arrived, with the time
it was applied at; ``tick``: the leases a tick released; ``purge``: lineages retention dropped).
``convert`` reads such a data dir into the rows once, at its first start under this code, in the
same transaction as the start: the snapshot's objects are written as rows, the journal's entries
are re-applied over them exactly as they were applied live, and both tables are emptied.
"""

from __future__ import annotations

import logging
import sqlite3
from typing import TYPE_CHECKING

import msgspec
from resonate.connections.local import DurablePromise, ScheduleStub, Task

from service.engine.errors import CorruptDatabase, EngineUnavailable
from service.engine.state import IndexedState, unwrap_request_envelope

if TYPE_CHECKING:
    from pathlib import Path

logger = logging.getLogger(__name__)

APPLY = "apply"
TICK = "tick"
PURGE = "purge"
#: Objects written per flush while converting a snapshot (bounds the memory it takes).
CONVERT_CHUNK = 10_000


class Snapshot(msgspec.Struct, kw_only=True):
    """The whole durable state as the old engine wrote it (task timers were left out)."""

    promises: list[DurablePromise]
    tasks: list[Task]
    schedules: list[ScheduleStub]
    p_timeouts: list[tuple[str, int]]


def pending_conversion(db: sqlite3.Connection) -> bool:
    return (
        db.execute(
            "SELECT EXISTS(SELECT 1 FROM snapshot) OR EXISTS(SELECT 1 FROM journal)"
        ).fetchone()[0]
        == 1
    )


def convert(path: Path, db: sqlite3.Connection, state: IndexedState) -> None:
    """Write the snapshot and journal of ``db`` into ``state``'s rows and empty both tables.

    Runs inside the caller's transaction; a damaged snapshot or entry is ``CorruptDatabase``.
    """
    row = db.execute("SELECT seq, data FROM snapshot WHERE id = 1").fetchone()
    through = 0
    if row is not None:
        through = row[0]
        try:
            snapshot = msgspec.msgpack.decode(row[1], type=Snapshot)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise CorruptDatabase(path, f"snapshot: {exc}") from exc
        _write_snapshot(state, snapshot)
    entries = 0
    for seq, op, at, body in db.execute(
        "SELECT seq, op, at, body FROM journal WHERE seq > ? ORDER BY seq", (through,)
    ).fetchall():
        try:
            replay(state, op, at, body)
        except (msgspec.DecodeError, msgspec.ValidationError, ValueError) as exc:
            raise CorruptDatabase(path, f"journal entry {seq}: {exc}") from exc
        entries += 1
    state.db.write("DELETE FROM snapshot")
    state.db.write("DELETE FROM journal")
    logger.info(
        "engine: converted %s to rows (%s snapshot, %d journal entries)",
        path,
        "a" if row is not None else "no",
        entries,
    )


def _write_snapshot(state: IndexedState, snapshot: Snapshot) -> None:
    for kind, objects in (
        (state.promises, snapshot.promises),
        (state.tasks, snapshot.tasks),
        (state.schedules, snapshot.schedules),
    ):
        for n, obj in enumerate(objects, 1):
            kind[obj.id] = obj
            if n % CONVERT_CHUNK == 0:
                state.write_back()
        state.write_back()
    for promise_id, timeout in snapshot.p_timeouts:
        state.promises.set_timer(promise_id, timeout)
    state.write_back()


def replay(state: IndexedState, op: str, at: int, body: bytes) -> None:
    """Re-apply one old journal entry; raises ``msgspec.DecodeError``/``ValueError`` on damage.

    A request that failed when it was first applied fails the same way now, and is ignored the
    same way: its response was an error then too.
    """
    if op == APPLY:
        request = unwrap_request_envelope(msgspec.json.decode(body))
        try:
            state.apply(at, request)
        except EngineUnavailable:
            raise
        except Exception:  # the live path answered this request with an error too
            logger.debug("engine: replayed request failed as it did live", exc_info=True)
    elif op == TICK:
        released = msgspec.json.decode(body, type=list[tuple[str, int]])
        state.replay_tick(at, released)
    elif op == PURGE:
        state.purge(msgspec.json.decode(body, type=list[str]))
    else:
        msg = f"unknown journal entry kind {op!r}"
        raise ValueError(msg)
    state.outgoing.clear()
