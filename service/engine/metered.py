"""A ``Network`` that reports the kind of every request it carries, then passes it on.

Writes of audit events are told apart (the audit trail's cost is reported on its own).

Mailgate's costs are engine round trips (each is an HTTP call in split mode), so the process
counts them by kind (``mailgate_engine_requests_total``): the benchmark and the tests read how
many calls a submission, a status read or a decision takes from the same counter operators see.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from resonate_base.connections import Network

_KIND = re.compile(r'"kind"\s*:\s*"([a-z._]+)"')
#: Ids of audit events contain this; their writes are reported apart from the rest.
AUDIT_MARK = ":audit."


class MeteredNetwork:
    def __init__(self, network: Network, on_request: Callable[[str, bool], None]) -> None:
        self._network = network
        self._on_request = on_request

    async def start(self) -> None:
        await self._network.start()

    async def stop(self) -> None:
        await self._network.stop()

    async def send(self, req: str, headers: dict[str, str] | None = None) -> str:
        """The envelope's ``kind`` comes first in the SDK's encoding, so a short match finds it
        without decoding the whole request."""
        found = _KIND.search(req, 0, 200)
        self._on_request(found.group(1) if found else "unknown", AUDIT_MARK in req)
        return await self._network.send(req, headers)
