"""A data dir written by release 0.1 (``fixtures/release-0.1-datadir``) under today's code.

Its requests run as workflow version 1 and must finish on that version's call sequence, with
no second email for a round already asked; they get an audit trail built from what 0.1 kept,
and read, list and verify like new requests.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import AsyncIterator, Callable
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import httpx
import pytest
from smtp_sink import Sink
from support import REPLY_DOMAIN, local, wait_for_state

from service import config, tokens
from service.app import Mailgate, Roles
from service.reply_tokens import mint_reply_token

FIXTURE = Path(__file__).parent / "fixtures" / "release-0.1-datadir"
SECRET = "fixture-secret-made-by-release-0.1"
WRITTEN_AT_MS = 1_796_233_750_000
WAITING = "mg-1a33179770d71eb5d5b9"
SECOND_ROUND = "mg-f885013dba8b5e9f29af"
APPROVED = "mg-fe697fb6f67f0018755c"
ALICE = "alice@example.com"


def fixture_clock() -> Callable[[], int]:
    """Time as if the upgrade happened a minute after the data dir was written: its promises
    run out 365 days after that moment, whenever this test runs."""
    started = time.monotonic_ns() // 1_000_000
    return lambda: WRITTEN_AT_MS + 60_000 + time.monotonic_ns() // 1_000_000 - started


@pytest.fixture
async def upgraded(tmp_path: Path, start_sink) -> AsyncIterator[tuple[Mailgate, Sink]]:
    data = tmp_path / "data"
    shutil.copytree(FIXTURE, data, ignore=shutil.ignore_patterns("README.md"))
    sink = await start_sink()
    env = {
        "MAILGATE_DATA_DIR": str(data),
        "MAILGATE_HTTP_PORT": "0",
        "MAILGATE_INBOUND_PORT": "0",
        "MAILGATE_SECRET": SECRET,
        "MAILGATE_SUMMARIZER": "extractive",
        "MAILGATE_NOTIFIER": "smtp",
        "MAILGATE_SMTP_PORT": str(sink.port),
        "MAILGATE_REPLY_DOMAIN": REPLY_DOMAIN,
        "MAILGATE_FROM": f"Mailgate <mailgate@{REPLY_DOMAIN}>",
        "MAILGATE_ALLOW_PRIVATE_URLS": "1",
    }
    app = Mailgate(
        config.load(env), Roles(worker=True, gateway=True, inbox=True), clock=fixture_clock()
    )
    await app.start()
    yield app, sink
    await app.stop()


async def test_release_0_1_requests_finish_after_the_upgrade(upgraded) -> None:
    app, sink = upgraded
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{app.http_port}") as client:
        waiting = (await client.get(f"/requests/{WAITING}")).json()
        second = (await client.get(f"/requests/{SECOND_ROUND}")).json()
        approved = (await client.get(f"/requests/{APPROVED}")).json()
        assert (waiting["state"], len(waiting["rounds"])) == ("waiting", 1)
        assert (second["state"], len(second["rounds"])) == ("waiting", 2)
        assert second["rounds"][0]["decision"] == "reject"
        assert second["rounds"][0]["reason"] == "Mention the tide times."
        assert approved["state"] == "approved" and approved["detail"].startswith("approved by")
        listed = {row["id"] for row in (await client.get("/requests")).json()["requests"]}
        assert listed == {WAITING, SECOND_ROUND, APPROVED}

        link = tokens.mint(
            waiting["rounds"][0]["round_id"], ALICE, secrets=(SECRET,), now_ms=app.clock()
        )
        decided = await client.post(
            local(f"/decide/{link}"), json={"verdict": "approve"}, headers=_json()
        )
        assert decided.status_code == 200, decided.text
        done = await wait_for_state(client, WAITING, "approved")
        assert [r["decision"] for r in done["rounds"]] == ["approve"]

        await _reply(app, second["rounds"][1]["round_id"], "No, also say how cold it gets.")
        asked = await _wait_for_mail(sink, 1)
        assert "(round 3)" in str(asked["Subject"])
        third = (await client.get(f"/requests/{SECOND_ROUND}")).json()
        assert [r["decision"] for r in third["rounds"]] == ["reject", "reject", None]
        assert third["rounds"][1]["via"] == "reply"
        await client.post(f"/requests/{SECOND_ROUND}/decision", json={"verdict": "approve"})
        finished = await wait_for_state(client, SECOND_ROUND, "approved")
        assert len(finished["rounds"]) == 3

        for request_id in (WAITING, SECOND_ROUND, APPROVED):
            trail = (await client.get(f"/requests/{request_id}/events")).json()
            assert trail["verification"]["verdict"] == "intact", trail["verification"]
            assert trail["events"][0]["kind"] == "submitted"
            assert trail["events"][-1]["kind"] in ("finished", "callback")
        again = await client.post("/requests", json={"url": waiting["url"], "email": ALICE})
        assert (again.status_code, again.json()["id"]) == (200, WAITING)
    assert len(sink.received) == 1, "a round asked by release 0.1 was asked again"


async def _reply(app: Mailgate, round_id: str, text: str) -> None:
    token = mint_reply_token(round_id, secrets=(SECRET,), now=app.clock())
    message = EmailMessage()
    message["From"] = ALICE
    message["To"] = f"reply+{token}@{REPLY_DOMAIN}"
    message["Subject"] = "Re: [Mailgate] Approve summary"
    message["Message-ID"] = "<upgrade-reply@example.com>"
    message.set_content(text)
    assert app.inbox is not None
    await aiosmtplib.send(message, hostname="127.0.0.1", port=app.inbox.port)


async def _wait_for_mail(sink: Sink, count: int) -> EmailMessage:
    deadline = time.monotonic() + 30
    while len(sink.received) < count and time.monotonic() < deadline:
        await _pause()
    assert len(sink.received) >= count, f"{len(sink.received)} emails"
    return sink.received[count - 1].message


async def _pause() -> None:
    import asyncio

    await asyncio.sleep(0.05)


def _json() -> dict[str, str]:
    return {"accept": "application/json"}
