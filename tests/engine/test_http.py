"""The SDK's own ``HttpConnection`` + ``SSEConnection`` drive workflows through ``serve_engine``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec
import pytest
from engine_workflows import approval, pending_child, suspended_approval
from resonate.error import ServerError
from resonate.types import Value
from smtp_sink import free_port

from service.engine import EngineConnection, open_durable, serve_engine


async def wait_listening(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            try:
                async with session.post(f"{url}/", data="{}") as resp:
                    await resp.read()
                    return
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.02)
    msg = f"{url} never answered"
    raise AssertionError(msg)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Any]]:
    """Serve an engine on a free loopback port; everything stops at teardown."""
    running: list[tuple[EngineConnection, asyncio.Event, asyncio.Task[None]]] = []

    async def start(conn: EngineConnection, token: str | None = None) -> str:
        await conn.start()
        port = free_port()
        stop = asyncio.Event()
        task = asyncio.create_task(serve_engine(conn, "127.0.0.1", port, stop, token=token))
        running.append((conn, stop, task))
        url = f"http://127.0.0.1:{port}"
        await wait_listening(url)
        return url

    yield start
    for conn, stop, task in running:
        stop.set()
        await asyncio.wait_for(task, 10)
        await conn.stop()


async def test_worker_and_client_over_http_complete_a_workflow(
    tmp_path: Path, serve, make_resonate
) -> None:
    url = await serve(open_durable(tmp_path, pid="engine", group="engine"))
    worker = make_resonate(url=url, group="workers", pid="worker-1")
    worker.register(approval)
    gateway = make_resonate(url=url, group="gateway", pid="gw-1")
    gateway.register(approval)

    handle = gateway.options(target="workers").rpc("wf-http", approval, 21)
    child = await pending_child(gateway, "wf-http")
    await gateway.promises.resolve(child, Value(data="approve"))
    assert await asyncio.wait_for(handle.result(), 15) == {"doubled": 42, "decision": "approve"}

    page = await gateway.promises.search(
        state="resolved", tags={"resonate:scope": "global"}, limit=10, cursor=None
    )
    assert [p.id for p in page.promises] == ["wf-http", child]


async def test_a_data_dir_written_embedded_is_served_to_separate_workers(
    tmp_path: Path, serve, make_resonate
) -> None:
    embedded = open_durable(tmp_path, pid="serve-1", group="workers")
    await embedded.start()
    resonate = make_resonate(embedded, group="workers", pid="serve-1")
    resonate.register(approval)
    _, child = await suspended_approval(resonate, "wf-moved", 5)
    await resonate.stop()
    await embedded.stop()

    url = await serve(open_durable(tmp_path, pid="engine", group="engine"))
    worker = make_resonate(url=url, group="workers", pid="worker-9")
    worker.register(approval)
    client = make_resonate(url=url, group="gateway", pid="gw-9")
    await client.promises.resolve(child, Value(data="approve"))
    handle = await client.get("wf-moved")
    assert await asyncio.wait_for(handle.result(), 15) == {"doubled": 10, "decision": "approve"}


async def test_bad_json_is_a_400_envelope(tmp_path: Path, serve) -> None:
    url = await serve(open_durable(tmp_path, pid="engine", group="engine"))
    async with aiohttp.ClientSession() as session, session.post(f"{url}/", data="{nope") as resp:
        assert resp.status == 400
        body = msgspec.json.decode(await resp.read())
    assert body["head"]["status"] == 400


async def test_token_is_required_when_configured(tmp_path: Path, serve, make_resonate) -> None:
    url = await serve(open_durable(tmp_path, pid="engine", group="engine"), token="s3cret")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/poll/g/p") as resp:
            assert resp.status == 401
        async with session.post(f"{url}/", data="{}") as resp:
            assert resp.status == 401
    allowed = make_resonate(url=url, group="g", pid="p", token="s3cret")
    created = await allowed.promises.create("tok", 1 << 62, Value(data=1), {})
    assert created.id == "tok"


async def test_search_errors_reach_the_sdk_as_server_errors(
    tmp_path: Path, serve, make_resonate
) -> None:
    url = await serve(open_durable(tmp_path, pid="engine", group="engine"))
    client = make_resonate(url=url, group="g", pid="p")
    with pytest.raises(ServerError) as caught:
        await client.promises.search(state="nonsense", tags=None, limit=None, cursor=None)
    assert caught.value.code == 400


def test_the_engine_listens_with_nagle_off():
    """Connections accepted from the listening socket inherit TCP_NODELAY; without it each
    engine call in split mode waited 40 ms for a delayed ACK."""
    import socket

    from service.engine.http import _bind

    sock = _bind("127.0.0.1", 0)
    try:
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        sock.close()
