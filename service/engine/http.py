"""``mailgate engine``: one engine served over the Resonate Server's wire protocol.

Two routes, the ones resonate-sdk 0.8.1's ``HttpConnection`` and ``SSEConnection`` use against a
Resonate Server: ``POST /`` takes a JSON request envelope and answers with the response envelope,
and ``GET /poll/{group}/{pid}`` is a server-sent-event stream of ``data: <message>`` frames
carrying the ``execute``/``unblock`` messages addressed to ``poll://any@group`` or
``poll://uni@group/pid``. So workers, the gateway and the mail listener run as separate
processes with ``RESONATE_URL`` pointing here — or at a real Resonate Server, through the very
same SDK code path. This module only translates: all semantics live in ``EngineConnection``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import socket
from typing import TYPE_CHECKING, Any

import msgspec
import uvicorn
from resonate.error import DecodingError
from resonate_base import PROTOCOL_VERSION
from starlette.applications import Starlette
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from service.engine.errors import EngineUnavailable
from service.engine.routing import Listener

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from starlette.requests import Request

    from service.engine.connection import EngineConnection

logger = logging.getLogger(__name__)

#: Messages buffered per SSE stream before new ones are dropped (the server's bounded channel).
POLL_BUFFER_MESSAGES = 10_000
#: A comment frame this often keeps idle proxies from closing the stream.
KEEPALIVE_S = 15.0
GRACEFUL_SHUTDOWN_S = 5


async def serve_engine(
    conn: EngineConnection,
    host: str,
    port: int,
    stop: asyncio.Event,
    *,
    token: str | None = None,
) -> None:
    """Serve ``conn`` on ``host:port`` until ``stop`` is set.

    The caller owns ``conn``'s lifecycle (``start`` before, ``stop`` after) and the process's
    signals: set ``stop`` to shut down. With ``token`` every request must carry
    ``Authorization: Bearer <token>`` (what the SDK sends for ``RESONATE_TOKEN``).
    """
    sock = _bind(host, port)
    config = uvicorn.Config(
        build_app(conn, stop, token=token),
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    server = _Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        server.should_exit = True
        stopping.cancel()
        await serving
        sock.close()


def build_app(
    conn: EngineConnection, stop: asyncio.Event, *, token: str | None = None
) -> Starlette:
    async def post(request: Request) -> Response:
        if not _authorized(request, token):
            return Response("unauthorized", status_code=401)
        body = (await request.body()).decode("utf-8", errors="replace")
        try:
            answer = await conn.send(body)
        except DecodingError as exc:
            return _error(body, 400, exc.message)
        except EngineUnavailable as exc:
            return _error(body, 503, f"engine unavailable: {exc.error}")
        return Response(answer, media_type="application/json")

    async def poll(request: Request) -> Response:
        if not _authorized(request, token):
            return Response("unauthorized", status_code=401)
        group = request.path_params["group"]
        pid = request.path_params["pid"]
        return StreamingResponse(
            _stream(conn, group, pid, stop),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    return Starlette(
        routes=[
            Route("/", post, methods=["POST"]),
            Route("/poll/{group}/{pid}", poll, methods=["GET"]),
        ]
    )


async def _stream(
    conn: EngineConnection, group: str, pid: str, stop: asyncio.Event
) -> AsyncIterator[str]:
    queue: asyncio.Queue[str] = asyncio.Queue(maxsize=POLL_BUFFER_MESSAGES)

    def deliver(payload: str) -> None:
        try:
            queue.put_nowait(payload)
        except asyncio.QueueFull:
            logger.warning("engine: poll stream %s/%s is full, dropping a message", group, pid)

    listener = Listener(group, pid, deliver)
    ended = asyncio.ensure_future(_first(stop.wait(), conn.closed.wait()))
    conn.attach(listener)
    logger.info("engine: poll stream opened for %s/%s", group, pid)
    try:
        yield ": connected\n\n"
        while not ended.done():
            getting = asyncio.ensure_future(queue.get())
            done, _ = await asyncio.wait(
                {getting, ended}, timeout=KEEPALIVE_S, return_when=asyncio.FIRST_COMPLETED
            )
            if getting in done:
                yield f"data: {getting.result()}\n\n"
                continue
            getting.cancel()
            if not done:
                yield ": keepalive\n\n"
    finally:
        conn.detach(listener)
        ended.cancel()
        logger.info("engine: poll stream closed for %s/%s", group, pid)


async def _first(*waits: Any) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


def _authorized(request: Request, token: str | None) -> bool:
    if token is None:
        return True
    supplied = request.headers.get("authorization", "")
    return hmac.compare_digest(supplied.encode(), f"Bearer {token}".encode())


def _error(body: str, status: int, message: str) -> Response:
    """An error envelope echoing the request's kind and corrId, so the SDK reads the status."""
    kind: Any = None
    corr_id: Any = None
    with contextlib.suppress(msgspec.DecodeError):
        request = msgspec.json.decode(body)
        if isinstance(request, dict):
            kind = request.get("kind")
            head = request.get("head")
            corr_id = head.get("corrId") if isinstance(head, dict) else None
    envelope = {
        "kind": kind,
        "head": {"corrId": corr_id, "status": status, "version": PROTOCOL_VERSION},
        "data": {"error": message},
    }
    return Response(
        msgspec.json.encode(envelope), status_code=status, media_type="application/json"
    )


def _bind(host: str, port: int) -> socket.socket:
    """Bind before serving, so a taken port is an ``OSError`` here, not uvicorn's exit().

    TCP_NODELAY is set here, on the listening socket, because connections accepted from a
    socket handed to uvicorn do not get asyncio's default: without it every engine call waited
    for the peer's delayed ACK (44 ms a call on loopback, against 0.3–0.6 ms with it).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class _Server(uvicorn.Server):
    """uvicorn without its signal handlers: the process's signals belong to the CLI."""

    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield
