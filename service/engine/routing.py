"""Who receives an ``execute`` or ``unblock``: ``poll://`` addresses and the listeners behind them.

The engine mints the same addresses as the SDK's ``SSEConnection`` (``poll://any@group`` for a
group's work, ``poll://uni@group/pid`` for one process) whether a listener lives in this process
(the embedded ``Resonate``) or polls ``GET /poll/{group}/{pid}`` from another one. So a data dir
written embedded can later be served to separate workers, and the other way round, without
rewriting a single stored target. Routing follows the Resonate Server: anycast prefers the named
pid, else spreads over the group; unicast needs the exact pid; a message nobody can take is
dropped (pending tasks are re-sent when a listener of their group attaches, and by the retry
timer).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from collections.abc import Callable

logger = logging.getLogger(__name__)

SCHEME = "poll"
UNICAST = "uni"
ANYCAST = "any"


def unicast(group: str, pid: str) -> str:
    return f"{SCHEME}://{UNICAST}@{group}/{pid}"


def anycast(group: str) -> str:
    return f"{SCHEME}://{ANYCAST}@{group}"


@dataclass(frozen=True, slots=True)
class Address:
    cast: str
    group: str
    pid: str | None


def parse(address: str) -> Address | None:
    """Read a ``poll://`` address the way the server does (the host, i.e. group, lowercased)."""
    try:
        parts = urlsplit(address)
    except ValueError:
        return None
    if parts.scheme != SCHEME or parts.username not in (UNICAST, ANYCAST) or not parts.hostname:
        return None
    pid = parts.path[1:] or None
    return Address(cast=parts.username, group=parts.hostname, pid=pid)


@dataclass(eq=False, slots=True)
class Listener:
    """One receiver of pushed messages: the embedded process or one SSE stream."""

    group: str
    pid: str
    deliver: Callable[[str], None]
    key: str = field(init=False)

    def __post_init__(self) -> None:
        self.key = self.group.lower()

    def reached_by(self, address: Address) -> bool:
        if address.group != self.key:
            return False
        return address.cast == ANYCAST or address.pid == self.pid


class Router:
    """The listeners currently attached, by group."""

    def __init__(self) -> None:
        self._groups: dict[str, list[Listener]] = {}
        self._turn: dict[str, int] = {}

    def attach(self, listener: Listener) -> None:
        self._groups.setdefault(listener.key, []).append(listener)

    def detach(self, listener: Listener) -> None:
        members = self._groups.get(listener.key, [])
        if listener in members:
            members.remove(listener)
        if not members:
            self._groups.pop(listener.key, None)

    def listeners(self) -> list[Listener]:
        return [listener for members in self._groups.values() for listener in members]

    def route(self, address: str, payload: str) -> bool:
        """Deliver ``payload`` to the listener ``address`` names; False when there is none."""
        parsed = parse(address)
        if parsed is None:
            logger.warning("engine: cannot deliver to %s: not a poll:// address", address)
            return False
        members = self._groups.get(parsed.group)
        if not members:
            return False
        chosen = next((m for m in members if m.pid == parsed.pid), None)
        if chosen is None:
            if parsed.cast == UNICAST:
                return False
            turn = self._turn.get(parsed.group, 0) % len(members)
            self._turn[parsed.group] = turn + 1
            chosen = members[turn]
        chosen.deliver(payload)
        return True
