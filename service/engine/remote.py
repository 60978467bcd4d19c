"""The connections to a remote engine (``mailgate engine`` or a Resonate Server).

The SDK builds these itself from a URL; Mailgate builds them here (the only place outside
``engine/state.py`` that names SDK connection classes) so it can meter the network like the
embedded one, and so the push stream lives as long as the process.

The SDK's ``SSEConnection`` opens its stream with aiohttp's default timeout, whose *total* of
five minutes covers reading the endless response: after five minutes the read raises a
``TimeoutError`` the SDK's reconnect loop does not catch, and the role silently stops receiving
work. ``LongPoll`` gives the stream no total and a read timeout instead (``mailgate engine``
sends a keepalive every 15 s), which aiohttp raises as a ``ClientError`` that the SDK's loop
answers by reconnecting — so a dead engine connection is noticed too.
"""

from __future__ import annotations

import aiohttp
from resonate.connections.http import HttpConnection
from resonate.connections.sse import SSEConnection
from resonate_base.connections import Network, Source

#: Three missed keepalives of ``mailgate engine`` (service/engine/http.py sends one every 15 s).
READ_TIMEOUT_S_DEFAULT = 45.0
CONNECT_TIMEOUT_S = 30.0


class LongPoll(SSEConnection):
    def __init__(
        self,
        url: str,
        *,
        pid: str,
        group: str,
        auth: str | None,
        read_timeout_s: float = READ_TIMEOUT_S_DEFAULT,
    ) -> None:
        super().__init__(url=url, pid=pid, group=group, auth=auth)
        self._read_timeout_s = read_timeout_s

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None and not self._stopped:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=CONNECT_TIMEOUT_S, sock_read=self._read_timeout_s
                )
            )
        return super()._ensure_session()


def remote_connections(
    url: str,
    *,
    token: str | None,
    pid: str,
    group: str,
    listen: bool,
    read_timeout_s: float = READ_TIMEOUT_S_DEFAULT,
) -> tuple[Network, list[Source]]:
    """Requests over HTTP; pushed work and completions over a long poll when ``listen``."""
    network = HttpConnection(url=url, auth=token)
    if not listen:
        return network, []
    poll = LongPoll(url, pid=pid, group=group, auth=token, read_timeout_s=read_timeout_s)
    return network, [poll]
