"""Real peers for tests, on loopback: a page server, a callback receiver, a recording notifier;
and the recording stand-ins the fetchers take for sleeping and resolving names."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import httpx
from smtp_sink import Sink

from service.app import Mailgate, Roles
from service.config import Settings
from service.domain import Ask
from service.steps.guard import system_resolve

REPLY_DOMAIN = "mailgate.test"

ARTICLE = """<!doctype html><html><head><title>Tide pools</title>
<style>body{color:red}</style><script>var tracking = 1;</script></head>
<body><nav>Home | About | Contact</nav>
<article><h1>Tide pools</h1>
<p>Tide pools are rocky hollows that keep sea water when the tide goes out.</p>
<p>They shelter anemones, sea stars and small fish, which must survive heat and salt.</p>
<p>Visitors should step only on bare rock and never lift animals out of the water.</p>
</article><footer>Copyright 2026</footer></body></html>"""


class _Server(ThreadingHTTPServer):
    daemon_threads = True


class _Loopback:
    """A stdlib HTTP server on 127.0.0.1:0 in a thread; subclasses answer requests."""

    server: _Server | None = None

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.on_get(self)

            def do_POST(self) -> None:
                owner.on_post(self)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    @property
    def base(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def on_get(self, request: BaseHTTPRequestHandler) -> None:
        request.send_error(405)

    def on_post(self, request: BaseHTTPRequestHandler) -> None:
        request.send_error(405)


@dataclass
class PageServer(_Loopback):
    """Serves fixed pages and redirects, counting hits per path."""

    pages: dict[str, tuple[int, str, bytes, dict[str, str]]] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)

    def add(
        self,
        path: str,
        body: str | bytes,
        *,
        status: int = 200,
        content_type: str = "text/html; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> str:
        data = body.encode() if isinstance(body, str) else body
        self.pages[path] = (status, content_type, data, headers or {})
        return self.base + path

    def redirect(self, path: str, location: str) -> str:
        return self.add(path, "", status=302, headers={"Location": location})

    def on_get(self, request: BaseHTTPRequestHandler) -> None:
        path = request.path.split("?")[0]
        self.hits[path] = self.hits.get(path, 0) + 1
        status, content_type, data, headers = self.pages.get(
            path, (404, "text/plain", b"not found", {})
        )
        request.send_response(status)
        request.send_header("Content-Type", content_type)
        request.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            request.send_header(name, value)
        request.end_headers()
        request.wfile.write(data)


@dataclass
class CallbackSink(_Loopback):
    """Receives outcome callbacks; fails the first ``fail_first`` deliveries with a 500."""

    fail_first: int = 0
    attempts: int = 0
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.base + "/hook"

    def on_post(self, request: BaseHTTPRequestHandler) -> None:
        body = request.rfile.read(int(request.headers.get("Content-Length", "0")))
        self.attempts += 1
        if self.attempts <= self.fail_first:
            request.send_response(500)
            request.send_header("Content-Length", "0")
            request.end_headers()
            return
        self.received.append(({k.lower(): v for k, v in request.headers.items()}, body))
        request.send_response(204)
        request.end_headers()


class RecordingNotifier:
    """Keeps every ask so a test can follow the link a person would get."""

    name = "recording"

    def __init__(self) -> None:
        self.asks: list[Ask] = []

    async def ask(self, ask: Ask) -> str | None:
        self.asks.append(ask)
        return None

    async def wait_for(self, count: int, timeout: float = 30) -> Ask:
        async with asyncio.timeout(timeout):
            while len(self.asks) < count:
                await asyncio.sleep(0.02)
        return self.asks[count - 1]


@dataclass
class Running:
    app: Mailgate
    client: httpx.AsyncClient
    notifier: RecordingNotifier


StartListener = Callable[..., Awaitable[tuple[Running, Sink]]]


async def wait_for_state(
    client: httpx.AsyncClient,
    request_id: str,
    *states: str,
    timeout: float = 30,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            body = (await client.get(f"/requests/{request_id}", headers=headers)).json()
            if body.get("state") in states:
                return body
            await asyncio.sleep(0.05)


def reply_to(request: EmailMessage, text: str, sender: str) -> EmailMessage:
    """The answer ``sender``'s mail client writes to Mailgate's ``request``."""
    reply = EmailMessage()
    reply["From"] = sender
    reply["To"] = request["Reply-To"]
    reply["Subject"] = "Re: " + str(request["Subject"])
    reply["In-Reply-To"] = request["Message-ID"]
    reply.set_content(text)
    return reply


def local(url: str) -> str:
    """The path of a link built from MAILGATE_PUBLIC_URL, to request from the test's port."""
    return urlsplit(url).path


class Sleeps(list[float]):
    """Records backoff delays instead of waiting, and can run a hook at each one."""

    on_sleep: Callable[[], None] | None = None

    async def __call__(self, seconds: float) -> None:
        self.append(seconds)
        if self.on_sleep is not None:
            self.on_sleep()


def jittered(delays: Sequence[float], backoff: Sequence[float], jitter_s: float) -> bool:
    """Each delay is its backoff plus at most ``jitter_s`` (``service.retry`` adds up to the
    first delay to the steps that share a server with others)."""
    pairs = zip(delays, backoff, strict=False)
    return len(delays) == len(backoff) and all(b <= d <= b + jitter_s for d, b in pairs)


class TableResolver:
    """Names from a fixed table, falling back to the system, with every lookup recorded: names
    like ``*.test`` then reach loopback, and a test can count how often a host was looked up."""

    def __init__(self, table: dict[str, str] | None = None) -> None:
        self.table = table or {}
        self.lookups: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.lookups.append(host)
        if host in self.table:
            return [self.table[host]]
        return await system_resolve(host, port)


class BackgroundMailgate:
    """Mailgate (worker and gateway) on its own event loop in a thread, for synchronous
    clients such as schemathesis' that block the calling thread while they wait."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.app: Mailgate | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mailgate", daemon=True)
        self._failure: BaseException | None = None

    @property
    def base(self) -> str:
        assert self.app is not None
        return f"http://127.0.0.1:{self.app.http_port}"

    def __enter__(self) -> BackgroundMailgate:
        self._thread.start()
        self._ready.wait(timeout=60)
        if self._failure is not None:
            raise self._failure
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=60)

    def _run(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self.app = Mailgate(self.settings, Roles(worker=True, gateway=True))
        try:
            await self.app.start()
        except BaseException as exc:
            self._failure = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.app.stop()
