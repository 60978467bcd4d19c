"""What can go wrong in the engine, split by when the caller sees it.

Start-time errors (``DataDirLocked``, ``CorruptDatabase``, ``SchemaTooNew``) refuse to bring
the engine up and name the file or process at fault: an operator must act. ``EngineUnavailable``
is the one error a request can meet (the commit failed, the engine is stopped); it is a
``ConnectorError`` so the SDK treats it as a transport failure it may retry, never as an answer.
"""

from __future__ import annotations

from pathlib import Path

from resonate_base.error import ConnectorError


class EngineError(Exception):
    """Root of every error the engine raises on purpose."""


class DataDirLocked(EngineError):
    """Another live process holds the data dir's lock."""

    def __init__(self, lock_path: Path, holder_pid: int | None) -> None:
        self.lock_path = lock_path
        self.holder_pid = holder_pid
        holder = f"process {holder_pid}" if holder_pid is not None else "another process"
        super().__init__(
            f"data dir is in use by {holder} (lock {lock_path}); stop it first or use "
            "another data dir"
        )


class CorruptDatabase(EngineError):
    """The database file cannot be read back into a state: refuse rather than start empty."""

    def __init__(self, path: Path, detail: str) -> None:
        self.path = path
        self.detail = detail
        super().__init__(f"engine database {path} is corrupt or truncated: {detail}")


class SchemaTooNew(EngineError):
    """The database was written by a newer Mailgate; reading it could lose what it holds."""

    def __init__(self, path: Path, found: int, supported: int) -> None:
        self.path = path
        self.found = found
        self.supported = supported
        super().__init__(
            f"engine database {path} has schema version {found}, this Mailgate reads up to "
            f"{supported}: upgrade Mailgate or point it at another data dir"
        )


class EngineUnavailable(EngineError, ConnectorError):
    """A request could not be made durable (disk full, I/O error) or the engine is stopped.

    Nothing the request did is visible afterwards: the engine rolls its state back to what is
    on disk before it answers anything else.
    """
