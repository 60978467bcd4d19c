"""Postgres crashes (``pg_ctl stop -m immediate``) and comes back while requests wait: readiness
goes false, then true; every request completes exactly once, no decision is lost, and the
waiting ones resume within seconds of Postgres being back (bare resonate-pg took 57 s); a
reminder that came due during the outage is sent once Postgres is back, once."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import httpx
import postgres
import pytest
from dkim_keys import write_key
from postgres import Postgres
from support import REPLY_DOMAIN, CallbackSink, local, wait_for_state

pytestmark = pytest.mark.slow

REQUESTS = 10
SECRET = "postgres-test-secret-0123456789"
RESUME_WITHIN_S = 10.0


@pytest.fixture
def own_postgres() -> Iterator[Postgres]:
    """A server of this test's own: it is stopped and started under everyone's feet."""
    server = postgres.running()
    yield server
    server.destroy()


def _completed(sink: CallbackSink) -> set[str]:
    return {json.loads(body)["id"] for _, body in sink.received}


async def _ready(client: httpx.AsyncClient) -> bool:
    try:
        return (await client.get("/readyz")).status_code == 200
    except httpx.TransportError:
        return False


async def _until_ready(client: httpx.AsyncClient, ready: bool, timeout: float = 30) -> float:
    started = time.monotonic()
    async with asyncio.timeout(timeout):
        while await _ready(client) != ready:
            await asyncio.sleep(0.05)
    return time.monotonic() - started


async def _decide(client: httpx.AsyncClient, link: str) -> None:
    """As a person would: click again until the page answers (it fails while Postgres is
    away), and a 409 means an earlier click went through."""
    async with asyncio.timeout(60):
        while True:
            try:
                response = await client.post(
                    local(link), json={"verdict": "approve"}, headers={"accept": "application/json"}
                )
            except httpx.TransportError:
                response = None
            if response is not None and response.status_code in (200, 409):
                return
            await asyncio.sleep(0.2)


async def test_waiting_requests_survive_a_postgres_crash(
    own_postgres: Postgres, start_mailgate, page_server, callback_sink
):
    mailgate = await start_mailgate(
        MAILGATE_ENGINE=own_postgres.new_database(), MAILGATE_SECRET=SECRET
    )
    client = mailgate.client
    ids = []
    for n in range(REQUESTS):
        url = page_server.add(f"/wait{n}", f"<p>Page {n} is about tide pools and crabs.</p>")
        body = {"url": url, "email": f"person{n}@example.com", "callback_url": callback_sink.url}
        ids.append((await client.post("/requests", json=body)).json()["id"])
    await mailgate.notifier.wait_for(REQUESTS)
    for request_id in ids:
        await wait_for_state(client, request_id, "waiting")
    links = {ask.request_id: ask.decide_url for ask in mailgate.notifier.asks}

    before, after = ids[: REQUESTS // 2], ids[REQUESTS // 2 :]
    for request_id in before:  # accepted; their workflows resume as Postgres goes down
        await _decide(client, links[request_id])
    await asyncio.to_thread(own_postgres.stop, "immediate")
    await _until_ready(client, False, timeout=15)
    await asyncio.sleep(2)
    await asyncio.to_thread(own_postgres.start)
    back = time.monotonic()

    ready_after = await _until_ready(client, True)
    for request_id in after:
        await _decide(client, links[request_id])
    async with asyncio.timeout(60):
        while len(_completed(callback_sink)) < REQUESTS:
            await asyncio.sleep(0.05)
    resumed_after = time.monotonic() - back
    print(f"ready {ready_after:.2f}s and all {REQUESTS} complete {resumed_after:.2f}s after start")
    await asyncio.sleep(1.0)

    outcomes = [json.loads(body) for _, body in callback_sink.received]
    # Callbacks are at least once (a crash after the POST sends it again); the request's
    # trail says how often it finished.
    assert {o["id"] for o in outcomes} == set(ids)
    assert all(o["state"] == "approved" for o in outcomes)
    assert all([r["decision"] for r in o["rounds"]] == ["approve"] for o in outcomes)
    assert len(mailgate.notifier.asks) == REQUESTS, "no request asked twice"
    assert resumed_after < RESUME_WITHIN_S
    for request_id in ids:
        trail = (await client.get(f"/requests/{request_id}/events")).json()
        assert trail["verification"]["verdict"] == "intact"
        kinds = [e["kind"] for e in trail["events"]]
        assert (kinds.count("decided"), kinds.count("finished")) == (1, 1), "exactly once"


async def test_a_reminder_due_while_postgres_is_down_is_sent_once_it_is_back(
    own_postgres: Postgres, start_mailgate, start_sink, page_server
):
    sink = await start_sink()
    mailgate = await start_mailgate(
        recording=False,
        MAILGATE_ENGINE=own_postgres.new_database(),
        MAILGATE_SECRET=SECRET,
        MAILGATE_NOTIFIER="smtp",
        MAILGATE_SMTP_PORT=str(sink.port),
        MAILGATE_FROM=f"Mailgate <mailgate@{REPLY_DOMAIN}>",
        MAILGATE_DKIM_KEY_FILE=str(write_key(own_postgres.root)),
        MAILGATE_DECISION_TTL="10m",
        MAILGATE_REMIND_AFTER="3s",
        MAILGATE_REMIND_EVERY="1h",
    )
    client = mailgate.client
    body = {"url": page_server.base + "/article", "email": "alice@example.com"}
    request_id = (await client.post("/requests", json=body)).json()["id"]
    await wait_for_state(client, request_id, "waiting")
    async with asyncio.timeout(30):
        while not sink.received:
            await asyncio.sleep(0.05)
    asked = time.monotonic()

    await asyncio.to_thread(own_postgres.stop, "immediate")
    await asyncio.sleep(max(0.0, 4.5 - (time.monotonic() - asked)))  # due at 3 s: missed
    assert len(sink.received) == 1, "no reminder while Postgres is down"
    await asyncio.to_thread(own_postgres.start)
    back = time.monotonic()
    async with asyncio.timeout(RESUME_WITHIN_S):
        while len(sink.received) < 2:
            await asyncio.sleep(0.05)
    print(f"reminder sent {time.monotonic() - back:.2f}s after Postgres was back")
    request, reminder = (r.message for r in sink.received[:2])
    assert str(reminder["Subject"]).startswith("[Mailgate] Reminder: approve ")
    assert reminder["In-Reply-To"] == request["Message-ID"]

    link = next(
        line.removeprefix("Approve: ").split("?")[0]
        for line in request.get_body(("plain",)).get_content().splitlines()
        if line.startswith("Approve: ")
    )
    await _decide(client, link)
    await wait_for_state(client, request_id, "approved")
    await asyncio.sleep(1.0)
    trail = (await client.get(f"/requests/{request_id}/events")).json()
    assert trail["verification"]["verdict"] == "intact"
    assert [e["kind"] for e in trail["events"]].count("reminded") == 1
    assert len(sink.received) == 2, "one reminder, sent once"
