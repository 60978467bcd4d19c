"""The connections to a remote engine (``mailgate engine`` or a Resonate Server).

The SDK builds these itself from a URL; Mailgate builds them here (the only place outside
``engine/state.py`` that names SDK connection classes) so it can meter the network like the
embedded one.
"""

from __future__ import annotations

from resonate.connections.http import HttpConnection
from resonate.connections.sse import SSEConnection
from resonate_base.connections import Network, Source


def remote_connections(
    url: str, *, token: str | None, pid: str, group: str, listen: bool
) -> tuple[Network, list[Source]]:
    """Requests over HTTP; pushed work and completions over SSE when ``listen``."""
    network = HttpConnection(url=url, auth=token)
    sources: list[Source] = [SSEConnection(url=url, pid=pid, group=group, auth=token)]
    return network, sources if listen else []
