"""Why a request is taking long, as the steps report it while they retry.

The notes are transient (the step's retry loop is the source of truth), so where the gateway
shares the process with the worker (``mailgate serve``) they live in memory. Split roles share
nothing but the engine, so there the worker records each *change* of note as a small settled
promise tagged with the request, and the gateway reads the newest one back through the public
promise API; the engine's retention removes them with everything else.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from resonate.error import ResonateError
from resonate.resonate import Resonate
from resonate.types import Value

logger = logging.getLogger(__name__)

NOTE_TAG = "mailgate:note-for"
#: A note is created and settled back to back; the timeout only bounds that gap.
NOTE_PENDING_TIMEOUT_MS = 7 * 86400 * 1000


@dataclass(frozen=True)
class Note:
    """A step's latest word on a request; ``at`` lets readers ignore notes that later progress
    (by this worker or, after a crash, another) has made stale."""

    detail: str
    at: int


class Progress(Protocol):
    def note(self, request_id: str, detail: str) -> None: ...
    def clear(self, request_id: str) -> None: ...
    async def get(self, request_id: str) -> Note | None: ...
    async def close(self) -> None: ...


class LocalProgress:
    def __init__(self, clock: Callable[[], int]) -> None:
        self._clock = clock
        self._notes: dict[str, Note] = {}

    def note(self, request_id: str, detail: str) -> None:
        self._notes[request_id] = Note(detail, self._clock())

    def clear(self, request_id: str) -> None:
        self._notes.pop(request_id, None)

    async def get(self, request_id: str) -> Note | None:
        return self._notes.get(request_id)

    async def close(self) -> None:
        return None


class SharedProgress:
    """Notes kept in the engine, written only when they change (a step retrying every minute
    for an hour writes one note, not sixty)."""

    def __init__(self, resonate: Resonate, clock: Callable[[], int]) -> None:
        self._resonate = resonate
        self._clock = clock
        self._written: dict[str, str] = {}
        self._sequence = itertools.count()
        self._pending: set[asyncio.Task[None]] = set()

    def note(self, request_id: str, detail: str) -> None:
        if self._written.get(request_id) == detail:
            return
        self._written[request_id] = detail
        task = asyncio.get_running_loop().create_task(self._write(request_id, detail))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def clear(self, request_id: str) -> None:
        if self._written.get(request_id):
            self.note(request_id, "")
        self._written.pop(request_id, None)

    async def get(self, request_id: str) -> Note | None:
        newest: tuple[str, Note] | None = None
        cursor: str | None = None
        while True:
            page = await self._resonate.promises.search(
                state="resolved", tags={NOTE_TAG: request_id}, limit=100, cursor=cursor
            )
            for record in page.promises:
                value = record.value.data
                detail = value.get("detail") if isinstance(value, dict) else None
                if isinstance(detail, str) and (newest is None or record.id > newest[0]):
                    newest = (record.id, Note(detail, record.settled_at or record.created_at))
            cursor = page.cursor
            if not cursor:
                break
        if newest is None or not newest[1].detail:
            return None
        return newest[1]

    async def close(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def _write(self, request_id: str, detail: str) -> None:
        now = self._clock()
        note_id = f"mgnote-{request_id}-{now:015d}-{next(self._sequence):06d}"
        try:
            await self._resonate.promises.create(
                note_id, now + NOTE_PENDING_TIMEOUT_MS, Value(data=None), {NOTE_TAG: request_id}
            )
            await self._resonate.promises.resolve(note_id, Value(data={"detail": detail}))
        except ResonateError as exc:
            logger.warning("could not record progress for %s: %s", request_id, exc)
