"""Deadlines, in seconds: reminders in the thread, expiry that is never approval unless asked
for, late answers refused, cancel; every end reaches the callback and the audit trail."""

from __future__ import annotations

import asyncio
import json
import time
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import pytest
from smtp_sink import Sink
from support import CallbackSink, PageServer, Running, local, wait_for_state

ALICE = "alice@example.com"


async def mails(sink: Sink, count: int, timeout: float = 30) -> list[EmailMessage]:
    async with asyncio.timeout(timeout):
        while len(sink.received) < count:
            await asyncio.sleep(0.05)
    return [r.message for r in sink.received]


async def submit(mailgate: Running, url: str, **fields: Any) -> str:
    response = await mailgate.client.post("/requests", json={"url": url, "email": ALICE, **fields})
    assert response.status_code == 202, response.text
    return response.json()["id"]


async def events(mailgate: Running, request_id: str) -> list[dict[str, Any]]:
    trail = (await mailgate.client.get(f"/requests/{request_id}/events")).json()
    assert trail["verification"]["verdict"] == "intact", trail["verification"]
    return trail["events"]


def link_of(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    line = next(x for x in body.get_content().splitlines() if x.startswith("Approve: "))
    return local(line.removeprefix("Approve: ").split("?")[0])


async def reply(mailgate: Running, message: EmailMessage, text: str, message_id: str) -> None:
    answer = EmailMessage()
    answer["From"] = ALICE
    answer["To"] = message["Reply-To"]
    answer["Subject"] = "Re: " + str(message["Subject"])
    answer["In-Reply-To"] = message["Message-ID"]
    answer["Message-ID"] = message_id
    answer.set_content(text)
    assert mailgate.app.inbox is not None
    await aiosmtplib.send(answer, hostname="127.0.0.1", port=mailgate.app.inbox.port)


@pytest.mark.slow
async def test_reminders_in_the_thread_then_expiry_refuses_late_answers(
    start_listener, page_server: PageServer, callback_sink: CallbackSink
):
    mailgate, sink = await start_listener(
        MAILGATE_DECISION_TTL="6s",
        MAILGATE_REMIND_AFTER="2s",
        MAILGATE_REMIND_EVERY="2s",
    )
    started = time.monotonic()
    request_id = await submit(
        mailgate, page_server.base + "/article", callback_url=callback_sink.url
    )
    request, first, second = await mails(sink, 3)
    expired = await wait_for_state(mailgate.client, request_id, "expired", timeout=30)
    assert time.monotonic() - started >= 6
    note = (await mails(sink, 4))[3]

    assert request["Message-ID"] not in (first["Message-ID"], second["Message-ID"])
    for number, reminder in enumerate((first, second), start=1):
        assert str(reminder["Subject"]).startswith("[Mailgate] Reminder: approve ")
        assert reminder["In-Reply-To"] == request["Message-ID"]
        assert reminder["Reply-To"] == request["Reply-To"]
        assert reminder["X-Mailgate-Request"] == request_id
        text = reminder.get_body(("plain",)).get_content()
        assert "still waits for your decision" in text and "expires on" in text
        assert link_of(reminder) == link_of(request), f"reminder {number} has the same link"
    assert note["In-Reply-To"] == request["Message-ID"]
    assert "No longer waiting" in str(note["Subject"])
    assert "expired" in note.get_body(("plain",)).get_content()

    assert expired["detail"].startswith("expired: no decision by the deadline")
    [round_] = expired["rounds"]
    assert (round_["decision"], round_["via"], round_["reminders"]) == ("expire", "expiry", 2)
    assert round_["deadline_at"] is not None

    page = await mailgate.client.get(link_of(request))
    assert page.status_code == 410 and "This request has expired" in page.text
    late = await mailgate.client.post(link_of(request), data={"verdict": "approve"})
    assert late.status_code == 410
    await reply(mailgate, request, "Yes, approved.", "<late-1@example.com>")
    await reply(mailgate, request, "Yes! Approved.", "<late-2@example.com>")
    told = await mails(sink, 5)
    assert "Expired" in str(told[4]["Subject"])
    assert "too late" in told[4].get_body(("plain",)).get_content()

    kinds = [e["kind"] for e in await events(mailgate, request_id)]
    assert kinds.count("reminded") == 2
    assert kinds.count("refused") == 3, "late link, two late replies"
    assert kinds.index("decided") < kinds.index("finished") < kinds.index("told")
    async with asyncio.timeout(10):
        while not callback_sink.received:
            await asyncio.sleep(0.05)
    assert json.loads(callback_sink.received[0][1])["state"] == "expired"
    assert (await wait_for_state(mailgate.client, request_id, "expired"))["state"] == "expired"
    assert len(sink.received) == 5, "the second late reply got no second answer"


@pytest.mark.parametrize(
    ("on_expiry", "state", "verdict"),
    [("approve", "approved", "approve"), ("reject", "rejected", "reject")],
)
async def test_on_expiry_decides_as_the_submitter_chose(
    start_listener, page_server: PageServer, on_expiry: str, state: str, verdict: str
):
    mailgate, sink = await start_listener(MAILGATE_REMIND_AFTER="0")
    request_id = await submit(
        mailgate, page_server.base + "/article", expires_in="2s", on_expiry=on_expiry
    )
    done = await wait_for_state(mailgate.client, request_id, state, timeout=30)
    assert [(r["decision"], r["via"]) for r in done["rounds"]] == [(verdict, "expiry")]
    assert done["detail"].startswith(f"{state}: no decision by the deadline")
    assert len(await mails(sink, 2)) == 2, "the request, then the note"


async def test_the_default_end_of_a_deadline_is_expired_never_approved(
    start_listener, page_server: PageServer
):
    mailgate, _ = await start_listener(MAILGATE_REMIND_AFTER="0")
    request_id = await submit(mailgate, page_server.base + "/article", expires_in="1s")
    done = await wait_for_state(mailgate.client, request_id, "expired", "approved", timeout=30)
    assert done["state"] == "expired"


async def test_a_decision_before_the_deadline_stops_its_watcher(
    start_listener, page_server: PageServer
):
    mailgate, sink = await start_listener(
        MAILGATE_DECISION_TTL="3s",
        MAILGATE_REMIND_AFTER="2s",
        MAILGATE_REMIND_EVERY="0",
    )
    request_id = await submit(mailgate, page_server.base + "/article")
    [request] = await mails(sink, 1)
    await mailgate.client.post(link_of(request), data={"verdict": "approve"})
    await wait_for_state(mailgate.client, request_id, "approved")
    watcher = await _watcher(mailgate, request_id)
    assert watcher.state == "rejected_canceled"
    await _past(mailgate, request_id, seconds=3.5)
    kinds = [e["kind"] for e in await events(mailgate, request_id)]
    assert "reminded" not in kinds and kinds.count("decided") == 1
    assert len(sink.received) == 1


async def test_cancel_ends_a_waiting_request_and_tells_the_approver(
    start_listener, page_server: PageServer, callback_sink: CallbackSink
):
    mailgate, sink = await start_listener()
    request_id = await submit(
        mailgate, page_server.base + "/article", callback_url=callback_sink.url
    )
    [request] = await mails(sink, 1)
    await wait_for_state(mailgate.client, request_id, "waiting")
    cancelled = await mailgate.client.request(
        "DELETE", f"/requests/{request_id}", json={"reason": "Published elsewhere."}
    )
    assert cancelled.status_code == 202, cancelled.text
    done = await wait_for_state(mailgate.client, request_id, "cancelled")
    assert done["detail"] == "cancelled by local via api: Published elsewhere."
    note = (await mails(sink, 2))[1]
    assert note["In-Reply-To"] == request["Message-ID"]
    assert "cancelled" in note.get_body(("plain",)).get_content()
    page = await mailgate.client.get(link_of(request))
    assert page.status_code == 410 and "This request was cancelled" in page.text
    again = await mailgate.client.request("DELETE", f"/requests/{request_id}")
    assert again.status_code == 409
    async with asyncio.timeout(10):
        while not callback_sink.received:
            await asyncio.sleep(0.05)
    assert json.loads(callback_sink.received[0][1])["state"] == "cancelled"
    missing = await mailgate.client.request("DELETE", "/requests/mg-00000000000000000000")
    assert missing.status_code == 404


async def test_cancel_while_summarizing_ends_before_any_email(
    start_listener, page_server: PageServer
):
    from service.testing import FakeOllama

    with FakeOllama(delay_s=1.5) as fake:
        mailgate, sink = await start_listener(MAILGATE_SUMMARIZER="ollama", OLLAMA_HOST=fake.url)
        request_id = await submit(mailgate, page_server.base + "/article")
        await fake.wait_for_chats(1)
        cancelled = await mailgate.client.request("DELETE", f"/requests/{request_id}")
        assert cancelled.status_code == 202
        done = await wait_for_state(mailgate.client, request_id, "cancelled", timeout=30)
    assert done["detail"].startswith("cancelled by local via api")
    assert sink.received == [], "nothing was ever sent, so nobody is told"


async def _watcher(mailgate: Running, request_id: str) -> Any:
    resonate = mailgate.app.resonate
    assert resonate is not None
    page = await resonate.promises.search(
        state=None, tags={"resonate:origin": request_id}, limit=100, cursor=None
    )
    found = [p for p in page.promises if ":d" in p.id and "." not in p.id.split(":")[1]]
    assert len(found) == 1, [p.id for p in page.promises]
    return found[0]


async def _past(mailgate: Running, request_id: str, *, seconds: float) -> None:
    """Until the watcher's last timer has fired: its sleeps settle when their time comes."""
    resonate = mailgate.app.resonate
    assert resonate is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        page = await resonate.promises.search(
            state="pending", tags={"resonate:timer": "true"}, limit=100, cursor=None
        )
        if not [p for p in page.promises if p.id.startswith(request_id)]:
            return
        await asyncio.sleep(0.1)
    pytest.fail(f"timers of {request_id} still pending after {seconds}s")


async def test_the_cli_cancels_and_submit_wait_exits_with_the_end(
    start_listener, page_server: PageServer, capsys: pytest.CaptureFixture[str]
):
    from service import cli

    mailgate, _ = await start_listener(MAILGATE_REMIND_AFTER="0")
    gateway = ["--gateway", str(mailgate.client.base_url)]
    env = {"PATH": "/usr/bin:/bin"}
    url = page_server.base + "/article"
    expired = await asyncio.to_thread(
        cli.main, ["submit", url, "--to", ALICE, "--expires-in", "1s", "--wait", *gateway], env
    )
    assert expired == cli.WAIT_EXIT["expired"] == 4
    page_server.add("/other", "<p>Another page about kelp forests and the otters in them.</p>")
    request_id = await submit(mailgate, page_server.base + "/other")
    await wait_for_state(mailgate.client, request_id, "waiting")
    capsys.readouterr()
    code = await asyncio.to_thread(
        cli.main, ["cancel", request_id, "--reason", "Wrong page.", *gateway], env
    )
    assert code == 0 and f"{request_id}: cancelling" in capsys.readouterr().out
    done = await wait_for_state(mailgate.client, request_id, "cancelled")
    assert done["detail"] == "cancelled by local via api: Wrong page."
    again = await asyncio.to_thread(cli.main, ["cancel", request_id, *gateway], env)
    assert again == 1 and "nothing to cancel" in capsys.readouterr().err
