"""Why a request is taking long, as the steps report it while they retry.

The notes are transient (the step's retry loop is the source of truth) but must reach whoever
reads the status, which in split roles is another process: each *change* of note is written
to the ledger (a step retrying every minute for an hour writes one note, not sixty), and the
status read shows the newest one until something newer happens to the request.
"""

from __future__ import annotations

import asyncio
import logging

from resonate.error import ResonateError

from service.ledger import Ledger

logger = logging.getLogger(__name__)


class Progress:
    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._written: dict[str, str] = {}
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

    async def close(self) -> None:
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def _write(self, request_id: str, detail: str) -> None:
        try:
            await self._ledger.note(request_id, detail)
        except ResonateError as exc:
            logger.warning("could not record progress for %s: %s", request_id, exc)
