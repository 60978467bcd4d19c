"""The downloaded page, kept on disk by workflow id.

The download is deliberately not checkpointed (a page can be megabytes and is reproducible from
its URL), so every replay of a workflow calls it again; this cache makes that replay read a
file instead of scraping the page a second time.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class PageCache:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, workflow_id: str) -> Path:
        if not _SAFE_ID.match(workflow_id):
            msg = f"unsafe workflow id for a cache file name: {workflow_id!r}"
            raise ValueError(msg)
        return self.directory / f"{workflow_id}.txt"

    def get(self, workflow_id: str) -> str | None:
        try:
            return self._path(workflow_id).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def put(self, workflow_id: str, text: str) -> None:
        """Write atomically, so a crash mid-write never leaves half a page to summarize."""
        self.directory.mkdir(parents=True, exist_ok=True)
        final = self._path(workflow_id)
        partial = final.with_suffix(f".{os.getpid()}.partial")
        with partial.open("w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        partial.replace(final)

    def drop(self, workflow_id: str) -> None:
        self._path(workflow_id).unlink(missing_ok=True)
