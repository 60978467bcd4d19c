"""The crash matrix: one request per cell, the process doing its work SIGKILLed at one kill
point, in one topology; restarted, the request must still complete exactly once.

Shared by ``tests/test_crash_matrix.py`` (which asserts every cell) and ``bench/matrix.py``
(which prints the table). Each kill point is hit by holding one of the request's outside peers
until the kill: the fake Ollama holds its answer, the SMTP sink answers 451 or holds its answer
to DATA or QUIT, or the test itself is the peer (a link POST, a reply over SMTP). The cells of a
topology run one after the other on one deployment, each with its own page; every count (LLM
calls, mails, callbacks, downloads) is taken per request, after the whole topology has run, so
a late duplicate is still seen.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
from dkim_keys import write_key
from processes import Process, clean_env, wait_tcp
from smtp_sink import RecordingHandler, Sink, free_port, listen
from support import ARTICLE, CallbackSink, PageServer, local, reply_to

from service.testing import FakeOllama

TOPOLOGIES = ("embedded", "split", "postgres")
APPROVER = "alice@example.com"
DOMAIN = "mailgate.test"
REASON = "Mention the crabs."
BUSY = "451 4.3.0 Try again later"
#: Long enough that the kill always lands while the fake Ollama still holds the call.
LLM_HOLD_S = 10.0
WAIT_S = 45.0
#: Reminders are a deployment setting, captured at submission: the cells with deadlines run
#: after the submitting role restarted with these.
DEADLINES = {"MAILGATE_REMIND_AFTER": "3s", "MAILGATE_REMIND_EVERY": "0"}
NO_REMINDERS = {"MAILGATE_REMIND_AFTER": "0"}


@dataclass
class World:
    """The peers every cell shares: the page server, the fake Ollama, the SMTP sink and the
    callback receiver."""

    pages: PageServer
    ollama: FakeOllama
    sink: Sink
    callbacks: CallbackSink

    @property
    def smtp(self) -> RecordingHandler:
        return self.sink.handler

    def calm(self) -> None:
        """Every peer answering at once again, as each cell starts."""
        self.ollama.delay_s = 0.0
        self.smtp.rcpt_replies.clear()
        self.smtp.release()


@contextlib.asynccontextmanager
async def world() -> AsyncIterator[World]:
    pages, callbacks = PageServer(), CallbackSink()
    pages.start()
    callbacks.start()
    sink, server = await listen(RecordingHandler())
    try:
        with FakeOllama() as ollama:
            yield World(pages, ollama, sink, callbacks)
    finally:
        sink.handler.release()
        server.close()
        await server.wait_closed()
        callbacks.stop()
        pages.stop()


class Deployment:
    """Mailgate in one topology, as real processes: ``serve``; or ``engine``, ``worker``,
    ``gateway`` and ``inbox`` around the engine; or the last three on Postgres."""

    def __init__(self, topology: str, root: Path, world: World, database: str | None) -> None:
        self.topology = topology
        self.http_port, self.inbound_port, self.engine_port = free_port(), free_port(), free_port()
        self.base = f"http://127.0.0.1:{self.http_port}"
        root.mkdir(parents=True, exist_ok=True)
        common = {
            "MAILGATE_SECRET": "crash-matrix-secret-0123456789",
            "MAILGATE_HTTP_PORT": str(self.http_port),
            "MAILGATE_PUBLIC_URL": self.base,
            "MAILGATE_ALLOW_PRIVATE_URLS": "1",
            "MAILGATE_SUMMARIZER": "ollama",
            "OLLAMA_HOST": world.ollama.url,
            "MAILGATE_NOTIFIER": "smtp",
            "MAILGATE_SMTP_PORT": str(world.sink.port),
            "MAILGATE_FROM": f"Mailgate <mailgate@{DOMAIN}>",
            "MAILGATE_DKIM_KEY_FILE": str(write_key(root)),
            "MAILGATE_REPLY_DOMAIN": DOMAIN,
            "MAILGATE_INBOUND_PORT": str(self.inbound_port),
            "MAILGATE_LEASE_TTL": "3s",
            **NO_REMINDERS,
        }
        if topology == "embedded":
            names = ["serve"]
        elif topology == "split":
            common["RESONATE_URL"] = f"http://127.0.0.1:{self.engine_port}"
            common["MAILGATE_ENGINE_PORT"] = str(self.engine_port)
            names = ["engine", "worker", "gateway", "inbox"]
        else:
            assert database is not None
            common["MAILGATE_ENGINE"] = database
            names = ["worker", "gateway", "inbox"]
        self.roles = {
            name: Process(
                name, clean_env(**common, MAILGATE_DATA_DIR=str(root / name)), root / f"{name}.log"
            )
            for name in names
        }
        self.submitter = "serve" if topology == "embedded" else "gateway"
        self.reminding = False

    def victims(self, point: KillPoint) -> tuple[str, ...]:
        """The process doing the work at ``point``: everything is ``serve`` when embedded;
        split, the gateway took the link's POST and the inbox the reply, the worker runs every
        step and timer, and while a round waits the engine (when there is one) holds it too."""
        if self.topology == "embedded":
            return ("serve",)
        if point.name == "waiting" and "engine" in self.roles:
            return ("engine", "worker")
        return ({"link": "gateway", "reply": "inbox"}.get(point.name, "worker"),)

    async def start(self, names: tuple[str, ...] | None = None) -> None:
        for name in names or tuple(self.roles):
            self.roles[name].start()
            if name == "engine":
                await wait_tcp(self.engine_port)
        for name in names or tuple(self.roles):
            if name in ("serve", "gateway"):
                await self.roles[name].wait_http(self.base + "/healthz")
            if name in ("serve", "inbox"):
                await wait_tcp(self.inbound_port)

    async def crash(
        self, names: tuple[str, ...], release: Callable[[], None] = lambda: None
    ) -> None:
        """SIGKILL ``names``, let the held peer go, and start them again."""
        for name in names:
            self.roles[name].kill()
        await asyncio.sleep(0.1)  # the peers' loops see the killed connections close
        release()
        await self.start(names)

    async def remind(self) -> None:
        """Restart the role that takes submissions with reminders on (``DEADLINES``)."""
        process = self.roles[self.submitter]
        process.terminate()
        process.env = {**process.env, **DEADLINES}
        await self.start((self.submitter,))
        self.reminding = True

    def stop(self) -> None:
        for process in reversed(self.roles.values()):
            process.terminate()


@dataclass
class Cell:
    """One request through one kill point, and what the driver needs to steer it."""

    world: World
    deployment: Deployment
    web: httpx.AsyncClient
    point: KillPoint
    request_id: str = ""

    @property
    def marker(self) -> str:
        return marker(self.deployment.topology, self.point)

    @property
    def path(self) -> str:
        return page_path(self.deployment.topology, self.point)

    async def submit(self) -> None:
        page = ARTICLE.replace("</article>", f"<p>{self.marker}</p></article>")
        body: dict[str, Any] = {
            "url": self.world.pages.add(self.path, page),
            "email": APPROVER,
            "callback_url": self.world.callbacks.url,
        }
        if self.point.expires_in is not None:
            body["expires_in"] = self.point.expires_in
        answer = await self.web.post("/requests", json=body)
        assert answer.status_code == 202, answer.text
        self.request_id = answer.json()["id"]

    async def crash(self, release: Callable[[], None] = lambda: None) -> None:
        await self.deployment.crash(self.deployment.victims(self.point), release)

    def mails(self, subject: str = "") -> list[EmailMessage]:
        return [
            r.message
            for r in self.world.sink.received
            if r.message["X-Mailgate-Request"] == self.request_id
            and str(r.message["Subject"]).startswith(subject)
        ]

    async def asked(self, rounds: int) -> EmailMessage:
        """Round ``rounds``' email, once the round waits (its sending is recorded)."""
        await self.view(lambda v: v.get("state") == "waiting" and len(v["rounds"]) == rounds)
        return self.mails("[Mailgate] Approve")[-1]

    async def view(self, wanted: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        async with asyncio.timeout(WAIT_S):
            while True:
                with contextlib.suppress(httpx.TransportError, ValueError):
                    answer = await self.web.get(f"/requests/{self.request_id}")
                    if answer.status_code == 200 and wanted(body := answer.json()):
                        return body
                await asyncio.sleep(0.05)

    async def decide(self, email: EmailMessage, verdict: str, reason: str | None = None) -> None:
        """Click the email's link, again while the gateway cannot answer (it may be
        restarting); a 409 means an earlier click went through."""
        text = email.get_body(("plain",)).get_content()
        link = re.search(r"(http://\S+/decide/[^\s?]+)", text).group(1)
        async with asyncio.timeout(WAIT_S):
            while True:
                with contextlib.suppress(httpx.TransportError):
                    answer = await self.web.post(
                        local(link),
                        json={"verdict": verdict, "reason": reason},
                        headers={"accept": "application/json"},
                    )
                    if answer.status_code in (200, 409):
                        return
                await asyncio.sleep(0.1)

    async def reply(self, email: EmailMessage, text: str) -> None:
        port = self.deployment.inbound_port
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=port) as smtp:
            errors, answer = await smtp.send_message(reply_to(email, text, APPROVER))
        assert errors == {} and answer.startswith("OK"), answer

    async def kinds(self) -> Counter[str]:
        """The request's audit trail so far, by kind of event."""
        trail = (await self.web.get(f"/requests/{self.request_id}/events")).json()
        return Counter(e["kind"] for e in trail["events"])

    async def at(self, *, done: tuple[str, ...], not_yet: tuple[str, ...]) -> None:
        """That the trail shows the kill point was reached (``done``) and not passed."""
        kinds = await self.kinds()
        missing = [k for k in done if not kinds[k]]
        passed = [k for k in not_yet if kinds[k]]
        assert not missing and not passed, f"kill point missed: {dict(kinds)}"


def marker(topology: str, point: KillPoint) -> str:
    """A sentence in the cell's page, so its prompts can be told from the other cells'."""
    return f"Matrix cell {topology} {point.name}."


def page_path(topology: str, point: KillPoint) -> str:
    return f"/{topology}-{point.name}"


async def until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(WAIT_S):
        while not condition():
            await asyncio.sleep(0.02)


async def downloaded(cell: Cell) -> None:
    """The page is fetched (and cached); the summary's LLM call is in flight."""
    ollama = cell.world.ollama
    ollama.delay_s = LLM_HOLD_S
    await cell.submit()
    await until(lambda: any(cell.marker in c.prompt for c in ollama.chats))
    await cell.at(done=("fetched",), not_yet=("summarized",))
    await cell.crash(lambda: setattr(ollama, "delay_s", 0.0))


async def summarized(cell: Cell) -> None:
    """The summary is checkpointed; the mail server answers 451, so nothing is sent yet."""
    smtp = cell.world.smtp
    smtp.rcpt_replies[:] = [BUSY] * 1000
    tried = smtp.rcpt_attempts
    await cell.submit()
    await until(lambda: smtp.rcpt_attempts > tried)
    await cell.at(done=("summarized",), not_yet=("asked",))
    await cell.crash(smtp.rcpt_replies.clear)


async def sending(cell: Cell) -> None:
    """The request email is on the wire: the mail server holds its answer to DATA."""
    await _held(cell, "DATA")


async def sent(cell: Cell) -> None:
    """The mail server said 250 for the request email, and holds its answer to QUIT: the
    round's sending is not recorded yet, so a resend (same Message-ID) is expected."""
    await _held(cell, "QUIT")


async def _held(cell: Cell, command: str) -> None:
    smtp = cell.world.smtp
    smtp.hold, held = command, smtp.holding
    await cell.submit()
    await until(lambda: smtp.holding > held)
    await cell.at(done=("summarized",), not_yet=("asked",))
    await cell.crash(smtp.release)


async def waiting(cell: Cell) -> None:
    await cell.submit()
    await cell.asked(1)
    await cell.crash()


async def link(cell: Cell) -> None:
    """Right after the link's POST (a rejection with a reason) returned 200."""
    await cell.submit()
    await cell.decide(await cell.asked(1), "reject", REASON)
    await cell.crash()


async def reply(cell: Cell) -> None:
    """Right after the reply listener answered 250 to a rejecting reply."""
    await cell.submit()
    await cell.reply(await cell.asked(1), f"No. {REASON}")
    await cell.crash()


async def reminder(cell: Cell) -> None:
    """The reminder's timer fired; the mail server answers its email 451."""
    await _after_the_request(cell, "[Mailgate] Reminder", ("asked",), ("reminded",))


async def expiry(cell: Cell) -> None:
    """The round expired; the mail server answers 451 to the note that says so."""
    await _after_the_request(cell, "[Mailgate] No longer waiting", ("decided",), ("told",))


async def _after_the_request(
    cell: Cell, then: str, done: tuple[str, ...], not_yet: tuple[str, ...]
) -> None:
    smtp = cell.world.smtp
    await cell.submit()
    await until(lambda: bool(cell.mails("[Mailgate] Approve")))  # seconds before the timer
    tried = smtp.rcpt_attempts
    smtp.rcpt_replies[:] = [BUSY] * 1000
    await until(lambda: smtp.rcpt_attempts > tried)
    await cell.at(done=done, not_yet=not_yet)
    await cell.crash(smtp.rcpt_replies.clear)
    await until(lambda: bool(cell.mails(then)))


@dataclass(frozen=True)
class KillPoint:
    name: str
    label: str
    drive: Callable[[Cell], Awaitable[None]]
    rounds: int = 1
    final: str = "approved"
    expires_in: str | None = None
    extra_mails: int = 0
    """Mails besides one request per round: the reminder, the note of the expiry."""
    via: str | None = None
    """How the first round was decided, when the kill point is a decision."""


KILL_POINTS = (
    KillPoint("downloaded", "after download (LLM call in flight)", downloaded),
    KillPoint("summarized", "after the summary checkpoint (SMTP 451)", summarized),
    KillPoint("sending", "between summary and email (DATA held)", sending),
    KillPoint("sent", "right after the SMTP 250 for the request (QUIT held)", sent),
    KillPoint("waiting", "while the round waits", waiting),
    KillPoint("link", "right after a link POST returned", link, rounds=2, via="link"),
    KillPoint("reply", "right after the inbox's 250 for a reply", reply, rounds=2, via="reply"),
    KillPoint(
        "reminder",
        "between a reminder's timer and its email",
        reminder,
        expires_in="60s",
        extra_mails=1,
    ),
    KillPoint(
        "expiry",
        "at expiry (the closing note held by 451)",
        expiry,
        final="expired",
        expires_in="2s",
        extra_mails=1,
    ),
)


@dataclass
class Outcome:
    topology: str
    point: KillPoint
    request_id: str
    seconds: float
    problems: list[str] = field(default_factory=list)
    rounds: int = 0
    mails: int = 0
    resent: int = 0
    llm_calls: int = 0
    llm_cut: int = 0
    """Calls the kill cut off before the fake Ollama answered them (not counted as calls)."""

    @property
    def ok(self) -> bool:
        return not self.problems

    def cell(self) -> str:
        if not self.ok:
            return "FAIL: " + "; ".join(self.problems)
        plural = {1: ""}
        resent = f" ({self.resent} resent)" if self.resent else ""
        cut = f" (+{self.llm_cut} cut off)" if self.llm_cut else ""
        return (
            f"ok {self.rounds} round{plural.get(self.rounds, 's')}, {self.mails} "
            f"mail{plural.get(self.mails, 's')}{resent}, {self.llm_calls} LLM "
            f"call{plural.get(self.llm_calls, 's')}{cut}, {self.seconds:.1f} s"
        )


async def run_cell(
    world: World, deployment: Deployment, web: httpx.AsyncClient, point: KillPoint
) -> Outcome:
    world.calm()
    cell = Cell(world, deployment, web, point)
    started = time.monotonic()
    try:
        await point.drive(cell)
        if point.final == "approved":
            await cell.decide(await cell.asked(point.rounds), "approve")
        await until(lambda: any(b.get("id") == cell.request_id for b in _callbacks(world)))
    except Exception as exc:  # a cell that hangs or breaks is a finding, not a stop
        return Outcome(
            deployment.topology, point, cell.request_id, 0.0, [f"{type(exc).__name__}: {exc}"]
        )
    return Outcome(deployment.topology, point, cell.request_id, time.monotonic() - started)


def _callbacks(world: World) -> list[dict[str, Any]]:
    return [json.loads(body) for _, body in world.callbacks.received]


async def judge(world: World, web: httpx.AsyncClient, outcome: Outcome) -> Outcome:
    if not outcome.ok:
        return outcome
    point, request_id = outcome.point, outcome.request_id
    problems = outcome.problems
    trail = (await web.get(f"/requests/{request_id}/events")).json()
    if trail["verification"]["verdict"] != "intact":
        problems.append(f"audit chain {trail['verification']['verdict']}")
    kinds = Counter(e["kind"] for e in trail["events"])
    decided = [e["data"] for e in trail["events"] if e["kind"] == "decided"]
    outcome.rounds = len(decided)
    if sorted(d["round"] for d in decided) != list(range(1, point.rounds + 1)):
        problems.append(f"decided rounds {[d['round'] for d in decided]}, not 1..{point.rounds}")
    elif point.via is not None and decided[0]["via"] != point.via:
        problems.append(f"round 1 decided via {decided[0]['via']}, not {point.via}")
    if kinds["finished"] != 1:
        problems.append(f"{kinds['finished']} finished events")
    ends = [b for b in _callbacks(world) if b.get("id") == request_id]
    if [b.get("state") for b in ends] != [point.final]:
        problems.append(f"callbacks {[b.get('state') for b in ends]}, expected [{point.final}]")
    mark = marker(outcome.topology, point)
    prompts = [c.prompt for c in world.ollama.answered if mark in c.prompt]
    outcome.llm_calls = len(prompts)
    outcome.llm_cut = sum(mark in c.prompt for c in world.ollama.chats) - len(prompts)
    if outcome.llm_calls != point.rounds:
        problems.append(f"{outcome.llm_calls} LLM calls for {point.rounds} rounds")
    elif point.rounds > 1 and REASON not in prompts[-1]:
        problems.append("the rejection's reason did not reach the next round's prompt")
    ids = Counter(
        str(r.message["Message-ID"])
        for r in world.sink.received
        if r.message["X-Mailgate-Request"] == request_id
    )
    outcome.mails, outcome.resent = sum(ids.values()), sum(ids.values()) - len(ids)
    if len(ids) != point.rounds + point.extra_mails:
        problems.append(f"{len(ids)} distinct mails, expected {point.rounds + point.extra_mails}")
    downloads = world.pages.hits.get(page_path(outcome.topology, point), 0)
    if downloads != 1:
        problems.append(f"page downloaded {downloads} times")
    return outcome


async def run_topology(
    topology: str, world: World, root: Path, database: str | None = None
) -> list[Outcome]:
    deployment = Deployment(topology, root, world, database)
    outcomes = []
    async with httpx.AsyncClient(base_url=deployment.base, timeout=10) as web:
        try:
            await deployment.start()
            for point in KILL_POINTS:
                if point.expires_in is not None and not deployment.reminding:
                    await deployment.remind()
                outcomes.append(await run_cell(world, deployment, web, point))
            await asyncio.sleep(1.0)  # a late duplicate would arrive now
            return [await judge(world, web, o) for o in outcomes]
        finally:
            deployment.stop()


def table(outcomes: list[Outcome]) -> str:
    topologies = list(dict.fromkeys(o.topology for o in outcomes))
    cells = {(o.point.name, o.topology): o.cell() for o in outcomes}
    lines = [
        "| kill point | " + " | ".join(topologies) + " |",
        "|---|" + "---|" * len(topologies),
    ]
    for point in KILL_POINTS:
        row = [cells.get((point.name, t), "") for t in topologies]
        lines.append(f"| {point.label} | " + " | ".join(row) + " |")
    return "\n".join(lines)
