"""The push stream to a remote engine outlives aiohttp's default five-minute request timeout
and notices a dead connection: it has no total timeout, and a silent stream is reconnected."""

from __future__ import annotations

import asyncio

from service.engine.remote import LongPoll, remote_connections


async def test_a_silent_stream_is_reconnected_and_the_session_has_no_total_timeout():
    connections: list[str] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append((await reader.readline()).decode())
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        await writer.drain()
        await asyncio.sleep(3600)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    poll = LongPoll(
        f"http://127.0.0.1:{port}", pid="p1", group="workers", auth=None, read_timeout_s=0.3
    )
    await poll.start()
    try:
        async with asyncio.timeout(10):
            while len(connections) < 2:
                await asyncio.sleep(0.05)
        assert poll._session is not None
        assert poll._session.timeout.total is None
    finally:
        await poll.stop()
        server.close()
    assert connections[0].startswith("GET /poll/workers/p1 ")


def test_only_listening_roles_get_a_stream():
    _, silent = remote_connections(
        "http://127.0.0.1:9", token=None, pid="p", group="g", listen=False
    )
    _, listening = remote_connections(
        "http://127.0.0.1:9", token="t", pid="p", group="g", listen=True
    )
    assert silent == [] and [type(s) for s in listening] == [LongPoll]
