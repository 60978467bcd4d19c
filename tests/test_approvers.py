"""Several approvers: any, all or N of M, each with their own email, links and reply address;
escalation, delegation and approval with corrections."""

from __future__ import annotations

import asyncio
import json
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import pytest
from smtp_sink import Sink
from support import CallbackSink, PageServer, Running, local, reply_to, wait_for_state

from service.reply_tokens import verify_reply_token

ALICE, BOB, CAROL, DAVE = (f"{n}@example.com" for n in ("alice", "bob", "carol", "dave"))
SECRET = "test-secret"


async def submit(mailgate: Running, url: str, **fields: Any) -> str:
    response = await mailgate.client.post("/requests", json={"url": url, **fields})
    assert response.status_code == 202, response.text
    return response.json()["id"]


async def mail_to(sink: Sink, address: str, count: int = 1, timeout: float = 30) -> EmailMessage:
    """The ``count``-th email ``address`` received."""
    async with asyncio.timeout(timeout):
        while True:
            theirs = [r.message for r in sink.received if r.rcpt_tos == [address]]
            if len(theirs) >= count:
                return theirs[count - 1]
            await asyncio.sleep(0.05)


def link_of(message: EmailMessage) -> str:
    text = message.get_body(("plain",)).get_content()
    line = next(x for x in text.splitlines() if x.startswith("Approve: "))
    return local(line.removeprefix("Approve: ").split("?")[0])


async def click(mailgate: Running, message: EmailMessage, verdict: str, **form: str) -> Any:
    return await mailgate.client.post(link_of(message), data={"verdict": verdict, **form})


async def reply(mailgate: Running, message: EmailMessage, sender: str, text: str) -> None:
    assert mailgate.app.inbox is not None
    answer = reply_to(message, text, sender)
    await aiosmtplib.send(answer, hostname="127.0.0.1", port=mailgate.app.inbox.port)


async def asked(mailgate: Running, request_id: str, number: int) -> dict[str, Any]:
    """The status once round ``number`` is recorded as sent (after every copy went out)."""
    async with asyncio.timeout(30):
        while True:
            view = (await mailgate.client.get(f"/requests/{request_id}")).json()
            if len(view["rounds"]) >= number and view["rounds"][number - 1]["asked_at"]:
                return view
            await asyncio.sleep(0.05)


def answers(view: dict[str, Any], number: int = 1) -> dict[str, str]:
    return {a["approver"]: a["answer"] for a in view["rounds"][number - 1]["answers"]}


async def test_all_must_approve_each_through_their_own_channel(
    start_listener, page_server: PageServer
):
    mailgate, sink = await start_listener()
    request_id = await submit(
        mailgate, page_server.base + "/article", approvers=[ALICE, BOB], policy="all"
    )
    to_alice, to_bob = await mail_to(sink, ALICE), await mail_to(sink, BOB)
    assert to_alice["Message-ID"] != to_bob["Message-ID"]
    assert link_of(to_alice) != link_of(to_bob)
    bob_token = to_bob["Reply-To"].split("+", 1)[1].split("@")[0]
    assert verify_reply_token(bob_token, secrets=(SECRET,)).recipient == 1

    first = await click(mailgate, to_alice, "approve")
    assert first.status_code == 200 and "Your answer is recorded" in first.text
    waiting = await wait_for_state(mailgate.client, request_id, "waiting")
    assert answers(waiting) == {ALICE: "approved", BOB: "waiting"}
    again = await click(mailgate, to_alice, "reject")
    assert again.status_code == 409 and "You already answered" in again.text

    await reply(mailgate, to_bob, BOB, "Yes, approved.")
    done = await wait_for_state(mailgate.client, request_id, "approved")
    assert answers(done) == {ALICE: "approved", BOB: "approved"}
    assert done["rounds"][0]["via"] == "votes"
    assert done["approvers"] == [ALICE, BOB] and done["policy"] == "all"
    await reply(mailgate, to_bob, BOB, "Yes again.")
    late = await mail_to(sink, BOB, 2)
    assert "Already decided" in str(late["Subject"])


async def test_one_rejection_under_all_rejects_the_round_and_tells_the_others(
    start_listener, page_server: PageServer
):
    from service.testing import FakeOllama

    with FakeOllama() as fake:
        mailgate, sink = await start_listener(MAILGATE_SUMMARIZER="ollama", OLLAMA_HOST=fake.url)
        request_id = await submit(
            mailgate, page_server.base + "/article", approvers=[ALICE, BOB, CAROL], policy="all"
        )
        to_bob = await mail_to(sink, BOB)
        await click(mailgate, await mail_to(sink, ALICE), "approve")
        await click(mailgate, to_bob, "reject", reason="Mention the crabs.")
        second = await mail_to(sink, CAROL, 3)
    told = await mail_to(sink, CAROL, 2)
    assert "Decided" in str(told["Subject"])
    assert "rejected by bob@example.com" in told.get_body(("plain",)).get_content()
    assert "(round 2)" in str(second["Subject"])
    assert "bob@example.com: Mention the crabs." in fake.chats[-1].prompt
    view = await asked(mailgate, request_id, 2)
    assert answers(view) == {ALICE: "approved", BOB: "rejected", CAROL: "not needed"}
    assert view["rounds"][0]["by"] == BOB
    assert answers(view, 2) == {ALICE: "waiting", BOB: "waiting", CAROL: "waiting"}


async def test_min_two_of_three_approve_and_the_third_is_not_needed(
    start_listener, page_server: PageServer
):
    mailgate, sink = await start_listener()
    request_id = await submit(
        mailgate,
        page_server.base + "/article",
        approvers=[ALICE, BOB, CAROL],
        policy={"min": 2},
    )
    await click(mailgate, await mail_to(sink, ALICE), "reject", reason="Too long.")
    await reply(mailgate, await mail_to(sink, CAROL), CAROL, "Approved.")
    assert (await wait_for_state(mailgate.client, request_id, "waiting"))["state"] == "waiting"
    await click(mailgate, await mail_to(sink, BOB), "approve")
    done = await wait_for_state(mailgate.client, request_id, "approved")
    assert answers(done) == {ALICE: "rejected", BOB: "approved", CAROL: "approved"}
    assert done["detail"] == f"approved by {CAROL}, {BOB} via votes"


async def test_under_any_the_first_answer_decides(start_listener, page_server: PageServer):
    mailgate, sink = await start_listener()
    request_id = await submit(mailgate, page_server.base + "/article", approvers=[ALICE, BOB])
    to_alice, to_bob = await mail_to(sink, ALICE), await mail_to(sink, BOB)
    assert (await click(mailgate, to_bob, "approve")).status_code == 200
    done = await wait_for_state(mailgate.client, request_id, "approved")
    assert answers(done) == {ALICE: "not needed", BOB: "approved"}
    assert (await click(mailgate, to_alice, "approve")).status_code == 409
    assert "Decided" in str((await mail_to(sink, ALICE, 2))["Subject"])


async def test_the_same_approvers_and_policy_make_the_same_request(
    start_listener, page_server: PageServer
):
    mailgate, _ = await start_listener()
    url = page_server.base + "/article"
    first = await submit(mailgate, url, approvers=[ALICE, BOB], policy="all")
    same = await mailgate.client.post(
        "/requests", json={"url": url, "approvers": [BOB, ALICE], "policy": "all"}
    )
    assert (same.status_code, same.json()["id"]) == (200, first)
    other = await mailgate.client.post(
        "/requests", json={"url": url, "approvers": [BOB, ALICE], "policy": "any"}
    )
    assert other.status_code == 202 and other.json()["id"] != first
    bad = await mailgate.client.post(
        "/requests", json={"url": url, "approvers": [ALICE], "policy": {"min": 2}}
    )
    assert bad.status_code == 422 and "min 2 of 1" in bad.json()["error"]


async def test_a_delegate_decides_in_the_approvers_place(start_listener, page_server: PageServer):
    mailgate, sink = await start_listener(MAILGATE_ALLOWED_APPROVERS="@example.com")
    request_id = await submit(mailgate, page_server.base + "/article", email=ALICE)
    to_alice = await mail_to(sink, ALICE)
    outside = await mailgate.client.post(
        link_of(to_alice) + "/delegate", data={"to": "mallory@elsewhere.org"}
    )
    assert outside.status_code == 422 and "MAILGATE_ALLOWED_APPROVERS" in outside.text
    handed = await mailgate.client.post(link_of(to_alice) + "/delegate", data={"to": DAVE})
    assert handed.status_code == 200 and "Handed over to dave@example.com" in handed.text
    to_dave = await mail_to(sink, DAVE)
    page = await mailgate.client.get(link_of(to_alice))
    assert "You handed this round over" in page.text
    refused = await click(mailgate, to_alice, "approve")
    assert refused.status_code == 403
    await reply(mailgate, to_dave, DAVE, "Yes")
    done = await wait_for_state(mailgate.client, request_id, "approved")
    assert done["detail"] == f"approved by {DAVE} via reply"
    assert answers(done) == {ALICE: "delegated", DAVE: "approved"}
    trail = (await mailgate.client.get(f"/requests/{request_id}/events")).json()
    [delegated] = [e for e in trail["events"] if e["kind"] == "delegated"]
    assert (delegated["data"]["from"], delegated["data"]["to"], delegated["data"]["by"]) == (
        ALICE,
        DAVE,
        ALICE,
    )


async def test_the_operator_reassigns_by_api_and_cli(
    start_listener, page_server: PageServer, capsys: pytest.CaptureFixture[str]
):
    from service import cli

    mailgate, sink = await start_listener()
    request_id = await submit(
        mailgate, page_server.base + "/article", approvers=[ALICE, BOB], policy="all"
    )
    await mail_to(sink, BOB)
    moved = await mailgate.client.post(
        f"/requests/{request_id}/reassign", json={"from": BOB, "to": CAROL}
    )
    assert moved.status_code == 200, moved.text
    gateway = ["--gateway", str(mailgate.client.base_url)]
    code = await asyncio.to_thread(
        cli.main, ["reassign", request_id, ALICE, DAVE, *gateway], {"PATH": "/usr/bin:/bin"}
    )
    assert code == 0 and "handed over to dave@example.com" in capsys.readouterr().out
    await click(mailgate, await mail_to(sink, CAROL), "approve")
    await click(mailgate, await mail_to(sink, DAVE), "approve")
    done = await wait_for_state(mailgate.client, request_id, "approved")
    assert answers(done) == {
        ALICE: "delegated",
        BOB: "delegated",
        CAROL: "approved",
        DAVE: "approved",
    }


async def test_escalation_offers_the_round_to_more_people(start_listener, page_server: PageServer):
    mailgate, sink = await start_listener(MAILGATE_REMIND_AFTER="0")
    request_id = await submit(
        mailgate,
        page_server.base + "/article",
        email=ALICE,
        escalate_to=[CAROL],
        escalate_after="1s",
        expires_in="60s",
    )
    to_carol = await mail_to(sink, CAROL)
    view = await wait_for_state(mailgate.client, request_id, "waiting")
    assert answers(view) == {ALICE: "waiting", CAROL: "waiting"}
    await reply(mailgate, to_carol, CAROL, "Approved.")
    done = await wait_for_state(mailgate.client, request_id, "approved")
    assert done["detail"] == f"approved by {CAROL} via reply"
    told = await mail_to(sink, ALICE, 2)
    assert "approved by carol@example.com" in told.get_body(("plain",)).get_content()
    trail = (await mailgate.client.get(f"/requests/{request_id}/events")).json()
    assert [e["data"]["to"] for e in trail["events"] if e["kind"] == "escalated"] == [[CAROL]]


async def test_approve_with_corrections_reaches_the_callback(
    start_listener, page_server: PageServer, callback_sink: CallbackSink
):
    mailgate, sink = await start_listener()
    request_id = await submit(
        mailgate, page_server.base + "/article", email=ALICE, callback_url=callback_sink.url
    )
    page = await mailgate.client.get(link_of(await mail_to(sink, ALICE)))
    assert "Correct the summary before approving" in page.text
    corrected = "Tide pools shelter anemones; step only on bare rock."
    done_page = await click(mailgate, await mail_to(sink, ALICE), "approve", summary=corrected)
    assert "You approved your corrected summary" in done_page.text
    done = await wait_for_state(mailgate.client, request_id, "approved")
    assert (done["approved_text"], done["edited_by"]) == (corrected, ALICE)
    async with asyncio.timeout(10):
        while not callback_sink.received:
            await asyncio.sleep(0.05)
    outcome = json.loads(callback_sink.received[0][1])
    assert (outcome["approved_text"], outcome["edited_by"]) == (corrected, ALICE)


async def test_unedited_approval_keeps_the_summary(start_listener, page_server: PageServer):
    mailgate, sink = await start_listener()
    request_id = await submit(mailgate, page_server.base + "/article", email=ALICE)
    to_alice = await mail_to(sink, ALICE)
    page = await mailgate.client.get(link_of(to_alice))
    summary = page.text.split('name="summary"', 1)[1].split(">", 1)[1].split("</textarea>")[0]
    await click(mailgate, to_alice, "approve", summary="  " + summary.replace("&#39;", "'") + "\n")
    done = await wait_for_state(mailgate.client, request_id, "approved")
    assert done["edited_by"] is None
    assert done["approved_text"] == done["rounds"][0]["summary"]


async def test_only_those_who_have_not_answered_are_reminded(
    start_listener, page_server: PageServer
):
    mailgate, sink = await start_listener(
        MAILGATE_REMIND_AFTER="2s",
        MAILGATE_REMIND_EVERY="0",
        MAILGATE_DECISION_TTL="60s",
    )
    request_id = await submit(
        mailgate, page_server.base + "/article", approvers=[ALICE, BOB], policy="all"
    )
    to_alice, to_bob = await mail_to(sink, ALICE), await mail_to(sink, BOB)
    await click(mailgate, to_alice, "approve")
    reminder = await mail_to(sink, BOB, 2)
    assert str(reminder["Subject"]).startswith("[Mailgate] Reminder")
    assert reminder["In-Reply-To"] == to_bob["Message-ID"]
    assert reminder["Reply-To"] == to_bob["Reply-To"]
    async with asyncio.timeout(10):  # the reminder is recorded once its email is out
        while (await mailgate.client.get(f"/requests/{request_id}")).json()["rounds"][0][
            "reminders"
        ] != 1:
            await asyncio.sleep(0.05)
    assert [r.message["Subject"] for r in sink.received if r.rcpt_tos == [ALICE]] == [
        to_alice["Subject"]
    ], "alice answered: no reminder for her"
