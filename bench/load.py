"""Load: N requests waiting at once, then decided by link POSTs and SMTP replies from C
concurrent clients; nothing lost, decisions/s and decision → complete p50/p99, in one run.

One ``mailgate serve`` subprocess on the durable embedded engine (``synchronous=FULL``), a fake
Ollama, pages and outcome callbacks on loopback, and an SMTP sink in this process that the
approval emails land in. Phase 1 submits N requests (each with a callback URL) and waits until
every one is waiting on its approver. Phase 2 starts C clients; each takes the next email from
the sink and answers it: alternately by POSTing its decision link and by an SMTP reply to its
``Reply-To``. Every ``--reject-every``-th request is rejected (by link, with a reason) in its
first round, so it is asked again and its second round is approved by the other channel.

A decision counts as made when the link's POST is answered 200 or the reply listener says
``250`` (the decision is durable then); complete is when the outcome callback arrives. Then
every request is checked: approved, exactly one ``finished`` and one ``decided`` per round in
its trail, the number of rounds expected, and a callback received; the trail's verification
is read for a sample. ``run`` is what ``tests/test_load.py`` calls with a smaller N.

Usage: ``python -m bench.load [--requests 1000] [--clients 20] [--reject-every 10]``
(~2 min with the defaults on 2 cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
from aiosmtpd.smtp import SMTP, Envelope, Session

from bench.inbox import yes
from bench.ledger import percentile

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from processes import Process, serve_env  # noqa: E402  (tests/: real peers on loopback)
from smtp_sink import RecordingHandler, free_port  # noqa: E402
from support import ARTICLE, CallbackSink, PageServer  # noqa: E402

from service.inbox.server import COMMAND_CALLS  # noqa: E402
from service.testing import FakeOllama  # noqa: E402

REPLY_DOMAIN = "mailgate.bench"
ASK_SUBJECT = "[Mailgate] Approve summary of "
LINK = re.compile(r"(http://\S+/decide/[^\s?]+)")
REASON = "Say that lifting animals out of the water harms them."
JSON = {"accept": "application/json"}
MESSAGES_PER_SESSION = COMMAND_CALLS["*"] // 2


@dataclass
class Result:
    """What one run measured, and every broken promise it found (empty when all held)."""

    requests: int
    clients: int
    submit_to_waiting_s: float
    decisions: int
    accept_s: float
    """From the first decision until the first N (one per request) were accepted."""
    decide_s: float
    latencies_ms: list[float]
    channels: Counter[str]
    problems: list[str] = field(default_factory=list)

    @property
    def decisions_per_s(self) -> float:
        return self.decisions / self.decide_s

    @property
    def accepted_per_s(self) -> float:
        return self.requests / self.accept_s

    @property
    def p50_ms(self) -> float:
        return statistics.median(self.latencies_ms)

    @property
    def p99_ms(self) -> float:
        return percentile(self.latencies_ms, 0.99)


class Asks(RecordingHandler):
    """The SMTP sink: every approval email (not the notices) is queued for the clients."""

    def __init__(self) -> None:
        super().__init__()
        self.queue: asyncio.Queue[EmailMessage] = asyncio.Queue()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        answer = await super().handle_DATA(server, session, envelope)
        message = self.received[-1].message
        if str(message["Subject"]).startswith(ASK_SUBJECT):
            self.queue.put_nowait(message)
        return answer


class Outcomes(CallbackSink):
    """Outcome callbacks, with the time each request's first one arrived."""

    def __init__(self) -> None:
        super().__init__()
        self.completed: dict[str, float] = {}
        self._one_at_a_time = threading.Lock()

    def on_post(self, request: BaseHTTPRequestHandler) -> None:
        """Serialized, so the body just recorded is this request's (the server threads)."""
        with self._one_at_a_time:
            super().on_post(request)
            request_id = json.loads(self.received[-1][1])["id"]
            self.completed.setdefault(request_id, time.perf_counter())


class Mailer:
    """One client's SMTP session to the reply listener, opened anew before the listener's
    per-session limit on MAIL commands, as an MTA with many messages for one host does."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._smtp: aiosmtplib.SMTP | None = None
        self._sent = 0

    async def send(self, message: EmailMessage) -> None:
        if self._smtp is None or self._sent == MESSAGES_PER_SESSION:
            await self.close()
            self._smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=self._port)
            await self._smtp.connect()
            self._sent = 0
        errors, _ = await self._smtp.send_message(message)
        assert not errors, errors
        self._sent += 1

    async def close(self) -> None:
        if self._smtp is not None:
            await self._smtp.quit()
            self._smtp = None


@dataclass
class Clients:
    """C clients answering asks: by link or by reply, alternately, approve unless the plan
    says this round is rejected."""

    web: httpx.AsyncClient
    asks: Asks
    inbound_port: int
    rejected_first: set[str]
    expected: int
    decided_at: dict[str, float] = field(default_factory=dict)
    rounds_seen: Counter[str] = field(default_factory=Counter)
    channels: Counter[str] = field(default_factory=Counter)
    answered_at: list[float] = field(default_factory=list)
    answered: int = 0

    async def run(self, count: int) -> None:
        await asyncio.gather(*(self._client(n) for n in range(count)))

    async def _client(self, n: int) -> None:
        mailer = Mailer(self.inbound_port)
        try:
            while self.answered < self.expected:
                try:
                    ask = await asyncio.wait_for(self.asks.queue.get(), timeout=0.5)
                except TimeoutError:
                    continue
                self.answered += 1
                await self._answer(ask, mailer, by_reply=self.answered % 2 == 0)
        finally:
            await mailer.close()

    async def _answer(self, ask: EmailMessage, mailer: Mailer, *, by_reply: bool) -> None:
        request_id = str(ask["X-Mailgate-Request"])
        self.rounds_seen[request_id] += 1
        first = self.rounds_seen[request_id] == 1
        if first and request_id in self.rejected_first:
            await self._link(ask, {"verdict": "reject", "reason": REASON})
            self.channels["link, reject"] += 1
            self.answered_at.append(time.perf_counter())
            return
        if by_reply:
            await mailer.send(yes(ask))
            self.channels["reply, approve"] += 1
        else:
            await self._link(ask, {"verdict": "approve"})
            self.channels["link, approve"] += 1
        self.decided_at[request_id] = time.perf_counter()
        self.answered_at.append(self.decided_at[request_id])

    async def _link(self, ask: EmailMessage, decision: dict[str, str]) -> None:
        text = ask.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        link = LINK.search(text).group(1)  # type: ignore[union-attr]
        answer = await self.web.post(link, json=decision, headers=JSON)
        assert answer.status_code == 200, answer.text


async def run(
    count: int = 1000,
    clients: int = 20,
    *,
    reject_every: int = 10,
    sample: int = 50,
    data: Path,
    timeout_s: float = 600,
) -> Result:
    """The whole load run against a fresh ``mailgate serve`` with its data under ``data``."""
    pages, outcomes = PageServer(), Outcomes()
    pages.start()
    pages.add("/article", ARTICLE)
    outcomes.start()
    asks = Asks()
    smtp = await asyncio.get_running_loop().create_server(
        lambda: SMTP(asks, hostname="sink.bench"), "127.0.0.1", 0
    )
    port, inbound = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    with FakeOllama() as fake:
        env = serve_env(
            data,
            port,
            MAILGATE_PUBLIC_URL=base,
            MAILGATE_SECRET="load-secret-0123456789",
            MAILGATE_SUMMARIZER="ollama",
            OLLAMA_HOST=fake.url,
            MAILGATE_NOTIFIER="smtp",
            MAILGATE_SMTP_PORT=str(smtp.sockets[0].getsockname()[1]),
            MAILGATE_FROM=f"Mailgate <mailgate@{REPLY_DOMAIN}>",
            MAILGATE_REPLY_DOMAIN=REPLY_DOMAIN,
            MAILGATE_INBOUND_PORT=str(inbound),
            MAILGATE_LOG_LEVEL="WARNING",
        )
        serve = Process("serve", env, data / "serve.log")
        serve.start()
        try:
            await serve.wait_http(base + "/readyz", timeout=60)
            async with (
                httpx.AsyncClient(base_url=base, timeout=60) as web,
                asyncio.timeout(timeout_s),
            ):
                return await _load(
                    web, asks, outcomes, pages, inbound, count, clients, reject_every, sample
                )
        finally:
            serve.terminate()
            smtp.close()
            outcomes.stop()
            pages.stop()


async def _load(
    web: httpx.AsyncClient,
    asks: Asks,
    outcomes: Outcomes,
    pages: PageServer,
    inbound: int,
    count: int,
    clients: int,
    reject_every: int,
    sample: int,
) -> Result:
    started = time.perf_counter()
    ids = await _submit(web, pages, outcomes.url, count, clients)
    await _until(lambda: asks.queue.qsize() >= count, lambda: f"{asks.queue.qsize()} asked")
    waiting = await _count_waiting(web)
    submit_to_waiting_s = time.perf_counter() - started
    problems = [] if waiting == count else [f"{waiting} of {count} requests waiting"]
    rejected_first = {request_id for n, request_id in enumerate(ids) if n % reject_every == 0}
    team = Clients(web, asks, inbound, rejected_first, expected=count + len(rejected_first))
    decide_started = time.perf_counter()
    await team.run(clients)
    accept_s = sorted(team.answered_at)[count - 1] - decide_started
    await _until(
        lambda: len(outcomes.completed) >= count,
        lambda: f"{len(outcomes.completed)} of {count} complete after {team.answered} answers",
    )
    decide_s = time.perf_counter() - decide_started
    problems += await _check(web, ids, rejected_first, outcomes, sample, clients)
    latencies = [
        (outcomes.completed[i] - team.decided_at[i]) * 1000
        for i in ids
        if i in outcomes.completed and i in team.decided_at
    ]
    return Result(
        requests=count,
        clients=clients,
        submit_to_waiting_s=submit_to_waiting_s,
        decisions=team.answered,
        accept_s=accept_s,
        decide_s=decide_s,
        latencies_ms=latencies,
        channels=team.channels,
        problems=problems,
    )


async def _until(condition: Callable[[], bool], progress: Callable[[], str]) -> None:
    """Wait for ``condition``; a timeout around this says how far it got."""
    try:
        while not condition():
            await asyncio.sleep(0.05)
    except asyncio.CancelledError as exc:
        exc.add_note(f"stopped waiting at: {progress()}")
        raise


async def _submit(
    web: httpx.AsyncClient, pages: PageServer, callback_url: str, count: int, clients: int
) -> list[str]:
    ids: list[str | None] = [None] * count
    numbers = iter(range(count))

    async def submitter() -> None:
        for n in numbers:
            body = {
                "url": f"{pages.base}/article?n={n}",
                "email": f"approver{n}@example.com",
                "callback_url": callback_url,
            }
            answer = await web.post("/requests", json=body)
            assert answer.status_code == 202, answer.text
            ids[n] = answer.json()["id"]

    await asyncio.gather(*(submitter() for _ in range(clients)))
    return [request_id for request_id in ids if request_id is not None]


async def _count_waiting(web: httpx.AsyncClient) -> int:
    """Walk the listing of waiting requests, page by page."""
    total, cursor = 0, None
    while True:
        params: dict[str, Any] = {"state": "waiting", "limit": 200}
        if cursor:
            params["cursor"] = cursor
        page = (await web.get("/requests", params=params)).json()
        total += len(page["requests"])
        cursor = page["cursor"]
        if not cursor:
            return total


async def _check(
    web: httpx.AsyncClient,
    ids: list[str],
    rejected_first: set[str],
    outcomes: Outcomes,
    sample: int,
    clients: int,
) -> list[str]:
    """Every request approved, its trail with one ``finished`` and one ``decided`` per round,
    in as many rounds as planned; a callback for each; a sample's verification intact."""
    problems: list[str] = []
    sampled = set(random.Random(15).sample(ids, min(sample, len(ids))))
    gate = asyncio.Semaphore(clients)

    async def one(request_id: str) -> None:
        async with gate:
            view = (await web.get(f"/requests/{request_id}")).json()
            trail = (await web.get(f"/requests/{request_id}/events")).json()
        rounds = 2 if request_id in rejected_first else 1
        kinds = Counter(event["kind"] for event in trail["events"])
        decided = Counter(
            event["data"].get("round") for event in trail["events"] if event["kind"] == "decided"
        )
        if view["state"] != "approved":
            problems.append(f"{request_id} ended {view['state']}")
        if kinds["finished"] != 1:
            problems.append(f"{request_id} finished {kinds['finished']} times")
        if sorted(decided.items()) != [(n, 1) for n in range(1, rounds + 1)]:
            problems.append(f"{request_id} decided {dict(decided)}, expected once per round")
        if len(view["rounds"]) != rounds:
            problems.append(f"{request_id} has {len(view['rounds'])} rounds, expected {rounds}")
        if request_id not in outcomes.completed:
            problems.append(f"{request_id}: no outcome callback")
        if request_id in sampled and trail["verification"]["verdict"] != "intact":
            problems.append(f"{request_id}: trail {trail['verification']}")

    await asyncio.gather(*(one(request_id) for request_id in ids))
    unknown = set(outcomes.completed) - set(ids)
    if unknown:
        problems.append(f"callbacks for requests never submitted: {sorted(unknown)[:5]}")
    return problems


def report(result: Result) -> None:
    print(
        f"{result.requests} requests waiting at once, decided by {result.clients} concurrent "
        f"clients ({', '.join(f'{n} {kind}' for kind, n in sorted(result.channels.items()))})"
    )
    print("| measurement | result |\n|---|---:|")
    print(f"| submit → all {result.requests} waiting, s | {result.submit_to_waiting_s:.1f} |")
    print(f"| first-round decisions accepted/s (200 or 250) | {result.accepted_per_s:.1f} |")
    print(f"| decisions/s (first decision → last completion) | {result.decisions_per_s:.1f} |")
    print(f"| decision accepted → workflow complete, p50 ms | {result.p50_ms:.0f} |")
    print(f"| decision accepted → workflow complete, p99 ms | {result.p99_ms:.0f} |")
    print(f"| requests lost or decided twice | {len(result.problems)} |")
    for problem in result.problems[:20]:
        print(f"  problem: {problem}")


async def main(count: int, clients: int, reject_every: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        result = await run(count, clients, reject_every=reject_every, data=Path(tmp))
    report(result)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--reject-every", type=int, default=10)
    arguments = parser.parse_args()
    asyncio.run(main(arguments.requests, arguments.clients, arguments.reject_every))
