"""Reply accepted → workflow resumed: latency (p50/p99) and sustained replies/s, in one run.

Runs Mailgate in-process on the durable embedded engine (SQLite, synchronous=FULL) with a fake
Ollama and an SMTP sink on loopback, starts N requests, then answers them by SMTP:
  1. one at a time, timing from the listener's 250 to the workflow's completion (the root
     promise settling, observed through the SDK's own subscription);
  2. a second batch of N with 10 concurrent SMTP clients, for replies/s.

    .venv/bin/python bench/inbox.py [N]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import time
from email import message_from_bytes, policy
from email.message import EmailMessage

import aiosmtplib
import httpx
from aiosmtpd.smtp import SMTP, Envelope, Session
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from service import config
from service.app import Mailgate, Roles
from service.testing import FakeOllama, LoopbackServer

PAGE = "<html><body><p>Tide pools keep sea water at low tide.</p><p>Crabs hide.</p></body></html>"


class Sink:
    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"


def yes(request: EmailMessage) -> EmailMessage:
    reply = EmailMessage()
    reply["From"] = request["To"]
    reply["To"] = request["Reply-To"]
    reply["Subject"] = "Re: " + request["Subject"]
    reply["In-Reply-To"] = request["Message-ID"]
    reply.set_content("Yes, approved.\n\nOn Tue, Mailgate wrote:\n> summary")
    return reply


async def _batch(
    web: httpx.AsyncClient, sink: Sink, tag: str, n: int, pages: str
) -> list[tuple[str, EmailMessage]]:
    start = len(sink.messages)
    ids = []
    for i in range(n):
        body = {"url": f"{pages}/{tag}/{i}", "email": f"approver{i}@example.com"}
        ids.append((await web.post("/requests", json=body)).json()["id"])
    while len(sink.messages) < start + n:
        await asyncio.sleep(0.02)
    by_request = {m["X-Mailgate-Request"]: m for m in sink.messages[start:]}
    return [(rid, by_request[rid]) for rid in ids]


async def measure(n: int) -> dict[str, float]:
    """Both phases in one process; latencies in ms, rates per second."""

    async def page(_request: Request) -> HTMLResponse:
        return HTMLResponse(PAGE)

    pages_server = LoopbackServer(Starlette(routes=[Route("/{path:path}", page)]))
    pages_server.start()
    sink = Sink()
    loop = asyncio.get_running_loop()
    smtp = await loop.create_server(lambda: SMTP(sink), "127.0.0.1", 0)
    smtp_port = smtp.sockets[0].getsockname()[1]
    with FakeOllama() as fake, tempfile.TemporaryDirectory() as data:
        settings = config.load(
            {
                "MAILGATE_DATA_DIR": data,
                "MAILGATE_HTTP_PORT": "0",
                "MAILGATE_INBOUND_PORT": "0",
                "MAILGATE_SUMMARIZER": "ollama",
                "OLLAMA_HOST": fake.url,
                "MAILGATE_NOTIFIER": "smtp",
                "MAILGATE_SMTP_PORT": str(smtp_port),
                "MAILGATE_REPLY_DOMAIN": "mailgate.test",
                "MAILGATE_FROM": "Mailgate <mailgate@mailgate.test>",
                "MAILGATE_ALLOW_PRIVATE_URLS": "1",
                "MAILGATE_SECRET": "bench",
                "MAILGATE_LOG_LEVEL": "WARNING",
            }
        )
        app = Mailgate(settings, Roles(worker=True, gateway=True, inbox=True))
        await app.start()
        web = httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}", timeout=60)
        try:
            latencies = []
            for request_id, request in await _batch(web, sink, "serial", n, pages_server.url):
                handle = await app.resonate.get(request_id)
                async with aiosmtplib.SMTP(hostname="127.0.0.1", port=app.inbox.port) as client:
                    await client.send_message(yes(request))
                    accepted = time.perf_counter()
                await handle.result()
                latencies.append((time.perf_counter() - accepted) * 1000)

            batch = await _batch(web, sink, "burst", n, pages_server.url)
            handles = [await app.resonate.get(rid) for rid, _ in batch]
            queue: asyncio.Queue[EmailMessage] = asyncio.Queue()
            for _, request in batch:
                queue.put_nowait(yes(request))

            async def sender() -> None:
                async with aiosmtplib.SMTP(hostname="127.0.0.1", port=app.inbox.port) as client:
                    while not queue.empty():
                        await client.send_message(queue.get_nowait())

            started = time.perf_counter()
            await asyncio.gather(*(sender() for _ in range(10)))
            accepted_s = time.perf_counter() - started
            await asyncio.gather(*(h.result() for h in handles))
            resumed_s = time.perf_counter() - started
        finally:
            await web.aclose()
            await app.stop()
            smtp.close()
            pages_server.stop()
    latencies.sort()
    return {
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "max_ms": latencies[-1],
        "accepted_per_s": n / accepted_s,
        "resumed_per_s": n / resumed_s,
    }


async def main(n: int) -> None:
    measured = await measure(n)
    print(f"replies: {n} one at a time, then {n} over 10 concurrent SMTP clients")
    print(
        "reply accepted -> workflow resumed and completed: "
        f"p50 {measured['p50_ms']:.1f} ms, p99 {measured['p99_ms']:.1f} ms, "
        f"max {measured['max_ms']:.1f} ms"
    )
    print(
        f"sustained: {measured['accepted_per_s']:.0f} replies/s accepted (250), "
        f"{measured['resumed_per_s']:.0f} replies/s through to completed workflows"
    )


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]) if len(sys.argv) > 1 else 200))
