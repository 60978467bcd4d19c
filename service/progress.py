"""Why a request is taking long, as the steps report it while they retry.

These notes are transient (the step's retry loop is the source of truth), so they live in the
worker's memory: the gateway shows them when it shares the process with the worker, as
``mailgate serve`` does.
"""

from __future__ import annotations


class Progress:
    def __init__(self) -> None:
        self._notes: dict[str, str] = {}

    def note(self, request_id: str, detail: str) -> None:
        self._notes[request_id] = detail

    def clear(self, request_id: str) -> None:
        self._notes.pop(request_id, None)

    def get(self, request_id: str) -> str | None:
        return self._notes.get(request_id)
