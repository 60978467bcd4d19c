"""Opt-in fakes for tests and benches: real HTTP servers on loopback, never patched clients.

Each server runs uvicorn on its own thread and event loop, so it serves the test's loop, a
blocking test, and a ``mailgate serve`` subprocess alike, and a slow fake reply never stalls
the code under test. Nothing in ``service`` imports this module.

``python -m service.testing fake-ollama [--port N]`` runs the fake Ollama on its own, for
manual runs of ``mailgate serve`` with ``OLLAMA_HOST`` pointed at it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Self

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from service.steps.summarize import PAGE_END, PAGE_START, REASON_END, REASON_START

START_TIMEOUT_S = 10.0

Messages = list[dict[str, Any]]


class LoopbackServer:
    """An ASGI app served on 127.0.0.1 from a thread; its port survives ``down``/``up``.

    ``down`` closes the listening socket, so clients see a refused connection exactly as when
    the real server is stopped.
    """

    def __init__(self, app: ASGIApp, port: int = 0) -> None:
        self._app = app
        self.port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        if self._thread is not None:
            return
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            log_config=None,
            access_log=False,
            lifespan="off",
            ws="none",
            http="h11",
            timeout_graceful_shutdown=0,
        )
        self._server = uvicorn.Server(config)
        self._failure = None
        self._thread = threading.Thread(
            target=self._run, args=(self._server, sock), name=f"loopback-{self.port}", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                msg = f"loopback server on port {self.port} did not start"
                raise RuntimeError(msg) from self._failure
            time.sleep(0.01)

    def stop(self) -> None:
        """Abrupt on purpose: in-flight requests are cut off at once (uvicorn answers them 500),
        so a test never waits for a slow fake reply to finish."""
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._server.force_exit = True
        self._thread.join(timeout=START_TIMEOUT_S)
        self._server = None
        self._thread = None

    down = stop
    up = start

    def _run(self, server: uvicorn.Server, sock: socket.socket) -> None:
        try:
            asyncio.run(server.serve(sockets=[sock]))
        except BaseException as exc:
            self._failure = exc
        finally:
            sock.close()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class ChatCall:
    """One ``POST /api/chat`` as the fake received it, answered or not."""

    model: str
    messages: Messages
    options: dict[str, Any]
    stream: bool

    @property
    def prompt(self) -> str:
        return "\n".join(str(m.get("content", "")) for m in self.messages)


def echo_summary(messages: Messages) -> str:
    """A deterministic stand-in for an LLM: the page's first sentence, marked as revised with
    every reason the prompt carries, oldest first."""
    prompt = "\n".join(str(m.get("content", "")) for m in messages if m.get("role") == "user")
    page = _between(prompt, PAGE_START, PAGE_END) or prompt
    first = re.split(r"(?<=[.!?])\s", page.strip(), maxsplit=1)[0].strip()
    reasons = [r.strip() for r in _all_between(prompt, REASON_START, REASON_END)]
    return f"{first} (revised: {'; '.join(reasons)})" if reasons else first


def _between(text: str, start: str, end: str) -> str | None:
    _head, found, tail = text.partition(start)
    return tail.partition(end)[0] if found else None


def _all_between(text: str, start: str, end: str) -> list[str]:
    return [part.partition(end)[0] for part in text.split(start)[1:]]


@dataclass(eq=False)
class FakeOllama:
    """Speaks the part of the Ollama API that the ``ollama`` client and Mailgate use.

    Every attribute may be changed while it runs: ``models`` (pulled models; others get
    Ollama's 404), ``reply`` (messages → answer), ``delay_s`` (per chat, to act like a CPU
    LLM), ``fail_first`` (the next N chats for a pulled model get HTTP 500). ``chats`` records
    every chat request, including the failed ones; ``answered`` only those it answered to a
    client still connected (a killed caller's request is not an answered one).
    """

    models: Sequence[str] = ("llama3.1",)
    reply: Callable[[Messages], str] = echo_summary
    delay_s: float = 0.0
    fail_first: int = 0
    port: int = 0
    chats: list[ChatCall] = field(default_factory=list)
    answered: list[ChatCall] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        routes = [
            Route("/", self._root, methods=["GET", "HEAD"]),
            Route("/api/version", self._version),
            Route("/api/tags", self._tags),
            Route("/api/chat", self._chat, methods=["POST"]),
        ]
        self._server = LoopbackServer(Starlette(routes=routes), self.port)

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> None:
        self._server.start()

    def stop(self) -> None:
        self._server.stop()

    def down(self) -> None:
        """Stop listening (connections are refused) but keep the port and the records."""
        self._server.down()

    def up(self) -> None:
        self._server.up()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    async def wait_for_chats(self, count: int, timeout_s: float = 10.0) -> list[ChatCall]:
        deadline = time.monotonic() + timeout_s
        while len(self.chats) < count:
            if time.monotonic() > deadline:
                msg = f"fake Ollama saw {len(self.chats)} chat requests, expected {count}"
                raise TimeoutError(msg)
            await asyncio.sleep(0.02)
        return list(self.chats)

    def _pulled(self, model: str) -> bool:
        return _tagged(model) in {_tagged(m) for m in self.models}

    async def _root(self, _request: Request) -> Response:
        return PlainTextResponse("Ollama is running")

    async def _version(self, _request: Request) -> Response:
        return JSONResponse({"version": "0.0.0-fake"})

    async def _tags(self, _request: Request) -> Response:
        return JSONResponse({"models": [_model_entry(m) for m in self.models]})

    async def _chat(self, request: Request) -> Response:
        body = await request.json()
        call = ChatCall(
            model=str(body.get("model", "")),
            messages=list(body.get("messages") or []),
            options=dict(body.get("options") or {}),
            stream=bool(body.get("stream", True)),
        )
        with self._lock:
            self.chats.append(call)
            failing = self.fail_first > 0 and self._pulled(call.model)
            if failing:
                self.fail_first -= 1
        if not self._pulled(call.model):
            error = f'model "{call.model}" not found, try pulling it first'
            return JSONResponse({"error": error}, status_code=404)
        if failing:
            return JSONResponse({"error": "fake Ollama failure"}, status_code=500)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
            if await request.is_disconnected():
                return Response(status_code=499)
        content = self.reply(call.messages)
        with self._lock:
            self.answered.append(call)
        if call.stream:
            return StreamingResponse(
                _chunks(call.model, content), media_type="application/x-ndjson"
            )
        return JSONResponse(_chat_part(call.model, content, done=True))


def _tagged(model: str) -> str:
    return model if ":" in model else f"{model}:latest"


def _model_entry(model: str) -> dict[str, Any]:
    name = _tagged(model)
    return {
        "name": name,
        "model": name,
        "modified_at": "2024-07-23T10:00:00Z",
        "size": 4_920_753_328,
        "digest": hashlib.sha256(name.encode()).hexdigest(),
        "details": {"format": "gguf", "family": "llama", "parameter_size": "8.0B"},
    }


def _chat_part(model: str, content: str, *, done: bool) -> dict[str, Any]:
    part: dict[str, Any] = {
        "model": model,
        "created_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "message": {"role": "assistant", "content": content},
        "done": done,
    }
    if done:
        part |= {"done_reason": "stop", "total_duration": 1, "eval_count": len(content.split())}
    return part


async def _chunks(model: str, content: str) -> AsyncIterator[str]:
    for piece in re.findall(r"\S+\s*|\s+", content):
        yield json.dumps(_chat_part(model, piece, done=False)) + "\n"
    yield json.dumps(_chat_part(model, "", done=True)) + "\n"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m service.testing")
    commands = parser.add_subparsers(dest="command", required=True)
    fake = commands.add_parser("fake-ollama", help="serve a fake Ollama until SIGINT/SIGTERM")
    fake.add_argument("--port", type=int, default=0)
    fake.add_argument("--model", action="append", help="a pulled model (repeatable)")
    fake.add_argument("--delay", type=float, default=0.0, help="seconds per chat")
    fake.add_argument("--fail-first", type=int, default=0, help="answer 500 to the first N chats")
    args = parser.parse_args(argv)
    stop_signals = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
    server = FakeOllama(
        models=tuple(args.model or ("llama3.1",)),
        delay_s=args.delay,
        fail_first=args.fail_first,
        port=args.port,
    )
    with server:
        print(f"fake Ollama listening on {server.url}", flush=True)
        signal.sigwait(stop_signals)


if __name__ == "__main__":
    main()
