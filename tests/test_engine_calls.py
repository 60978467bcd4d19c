"""What each operation costs in engine round trips, with the roles split as in production.

An engine is served over HTTP in this process; a gateway, a worker and a reply listener each
talk to it like separate processes would, and each counts its own requests on its metered
network (``mailgate_engine_requests_total``), where writes of audit events are counted apart.
The limits are the ledger's targets: a submission finds its pair with one search instead of
probing generations, a status read or a listing page does not read per request, and a decision
reads its round and its request once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx
import pytest
from dkim_keys import write_key
from smtp_sink import free_port
from support import REPLY_DOMAIN, PageServer, RecordingNotifier, local, wait_for_state

from service import config, engine
from service.app import Mailgate, Roles
from service.reply_tokens import mint_reply_token

SECRET = "split-secret-for-counting"


@pytest.fixture
async def split(tmp_path: Path) -> AsyncIterator[dict[str, Mailgate]]:
    port = free_port()
    conn = engine.open_memory(pid="engine", group="engine")
    await conn.start()
    stop = asyncio.Event()
    serving = asyncio.create_task(engine.serve_engine(conn, "127.0.0.1", port, stop))
    env = {
        "RESONATE_URL": f"http://127.0.0.1:{port}",
        "MAILGATE_SECRET": SECRET,
        "MAILGATE_DATA_DIR": str(tmp_path / "data"),
        "MAILGATE_HTTP_PORT": "0",
        "MAILGATE_INBOUND_PORT": "0",
        "MAILGATE_REPLY_DOMAIN": REPLY_DOMAIN,
        "MAILGATE_FROM": f"Mailgate <mailgate@{REPLY_DOMAIN}>",
        "MAILGATE_SUMMARIZER": "extractive",
        "MAILGATE_ALLOW_PRIVATE_URLS": "1",
        "MAILGATE_DKIM_KEY_FILE": str(write_key(tmp_path)),
    }
    roles = {
        "worker": Roles(worker=True),
        "gateway": Roles(gateway=True),
        "inbox": Roles(inbox=True),
    }
    apps = {
        name: Mailgate(config.load(env), role, notifier=RecordingNotifier())
        for name, role in roles.items()
    }
    try:
        for app in apps.values():
            await app.start()
        yield apps
    finally:
        for app in apps.values():
            await app.stop()
        stop.set()
        with contextlib.suppress(asyncio.CancelledError):
            await serving
        await conn.stop()


async def cost(app: Mailgate, action: Callable[[], Awaitable[Any]]) -> tuple[int, int]:
    """(engine calls, audit writes) ``app`` made while ``action`` ran."""
    before = _total(app.metrics.engine_calls()), _total(app.metrics.engine_calls(audit=True))
    await action()
    after = _total(app.metrics.engine_calls()), _total(app.metrics.engine_calls(audit=True))
    return after[0] - before[0], after[1] - before[1]


def _total(calls: dict[str, int]) -> int:
    return sum(calls.values())


@pytest.mark.slow
async def test_engine_calls_per_operation(split: dict[str, Mailgate], page_server: PageServer):
    gateway, inbox = split["gateway"], split["inbox"]
    notifier = split["worker"].notifier
    assert isinstance(notifier, RecordingNotifier)
    url = page_server.add("/costs", "<p>Tide pools keep sea water when the tide goes out.</p>")
    body = {"url": url, "email": "alice@example.com"}
    costs: dict[str, tuple[int, int]] = {}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gateway.http_port}") as client:
        submitted: list[httpx.Response] = []

        async def submit() -> None:
            submitted.append(await client.post("/requests", json=body))

        costs["submit, new pair"] = await cost(gateway, submit)
        request_id = submitted[0].json()["id"]
        assert submitted[0].status_code == 202
        await wait_for_state(client, request_id, "waiting")
        costs["submit, known pair"] = await cost(gateway, submit)
        assert submitted[1].status_code == 200
        costs["status read"] = await cost(gateway, lambda: client.get(f"/requests/{request_id}"))
        costs["listing, by state"] = await cost(
            gateway, lambda: client.get("/requests?state=waiting&limit=50")
        )
        costs["listing, all"] = await cost(gateway, lambda: client.get("/requests?limit=50"))
        first = await notifier.wait_for(1)
        costs["decision page"] = await cost(gateway, lambda: client.get(local(first.decide_url)))

        async def reject_by_link() -> None:
            answer = await client.post(
                local(first.decide_url),
                json={"verdict": "reject", "reason": "Say when."},
                headers={"accept": "application/json"},
            )
            assert answer.status_code == 200, answer.text

        costs["link decision"] = await cost(gateway, reject_by_link)
        second = await notifier.wait_for(2)
        await wait_for_state(client, request_id, "waiting")

        async def approve_by_reply() -> None:
            token = mint_reply_token(second.promise_id, secrets=(SECRET,), now=second.expires_at)
            message = EmailMessage()
            message["From"] = "alice@example.com"
            message["To"] = f"reply+{token}@{REPLY_DOMAIN}"
            message["Subject"] = "Re: [Mailgate] approve"
            message["Message-ID"] = "<costs@example.com>"
            message.set_content("Yes, go ahead.")
            assert inbox.inbox is not None
            await aiosmtplib.send(message, hostname="127.0.0.1", port=inbox.inbox.port)

        costs["reply decision"] = await cost(inbox, approve_by_reply)
        done = await wait_for_state(client, request_id, "approved")
    assert [r["via"] for r in done["rounds"]] == ["link", "reply"]
    print("\nengine calls (state, audit writes):", costs)
    limits = {
        "submit, new pair": 3,
        "submit, known pair": 2,
        "status read": 2,
        "listing, by state": 3,
        "listing, all": 3,
        "decision page": 2,
        "link decision": 4,
        "reply decision": 5,
    }
    assert {k: v[0] for k, v in costs.items() if v[0] > limits[k]} == {}
