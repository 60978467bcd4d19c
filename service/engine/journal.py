"""The journal seam: what the connection writes, and how a state is rebuilt from it.

Three kinds of entry make the state reproducible: ``apply`` (a request exactly as it arrived, with
the time it was applied at), ``tick`` (the time, and the leases that tick released — leases are
volatile, so they are recorded rather than recomputed) and ``purge`` (lineages dropped by
retention). ``IndexedState.apply`` is deterministic in ``(now, request)``, so replaying entries
over the last snapshot rebuilds exactly the state that answered the requests.

Two peers implement ``Journal``: ``NoJournal`` (the in-memory engine: nothing survives the
process) and ``store.SqliteJournal``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

import msgspec

from service.engine.state import IndexedState, Snapshot, unwrap_request_envelope

logger = logging.getLogger(__name__)

APPLY = "apply"
TICK = "tick"
PURGE = "purge"


@dataclass(frozen=True, slots=True)
class Entry:
    op: str
    at: int
    body: bytes


@dataclass(slots=True)
class Loaded:
    """A state read back from a journal, and the process ids that died with its last writer."""

    state: IndexedState
    dead_pids: frozenset[str] = field(default_factory=frozenset)


class Journal(Protocol):
    #: Whether ``append`` reaches disk; when False, responses need not wait for a commit.
    durable: bool

    def open(self) -> Loaded: ...
    def reload(self) -> Loaded: ...
    def claim(self, pid: str) -> None: ...
    def append(self, entries: list[Entry]) -> None: ...
    def wants_snapshot(self, promises: int) -> bool: ...
    def write_snapshot(self, snapshot: Snapshot) -> None: ...
    def close(self) -> None: ...


class NoJournal:
    """The in-memory engine's journal: remembers nothing."""

    durable = False

    def open(self) -> Loaded:
        return Loaded(state=IndexedState())

    def reload(self) -> Loaded:
        msg = "an in-memory engine has nothing to reload"
        raise RuntimeError(msg)

    def claim(self, pid: str) -> None:
        return None

    def append(self, entries: list[Entry]) -> None:
        return None

    def wants_snapshot(self, promises: int) -> bool:
        return False

    def write_snapshot(self, snapshot: Snapshot) -> None:
        return None

    def close(self) -> None:
        return None


def tick_entry(at: int, released: list[tuple[str, int]]) -> Entry:
    return Entry(op=TICK, at=at, body=msgspec.json.encode(released))


def purge_entry(at: int, roots: list[str]) -> Entry:
    return Entry(op=PURGE, at=at, body=msgspec.json.encode(roots))


def replay(state: IndexedState, op: str, at: int, body: bytes) -> None:
    """Re-apply one entry; raises ``msgspec.DecodeError``/``ValueError`` on a damaged one.

    A request that failed when it was first applied fails the same way now, and is ignored the
    same way: its response was an error then too.
    """
    if op == APPLY:
        request = unwrap_request_envelope(msgspec.json.decode(body))
        try:
            state.apply(at, request)
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
