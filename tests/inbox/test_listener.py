"""Deciding by replying: real SMTP conversations with the listener, end to end."""

from __future__ import annotations

import asyncio
import functools
from email.message import EmailMessage
from email.utils import make_msgid

import aiosmtplib
import dkim
import pytest
from dkim_keys import dns_for
from support import REPLY_DOMAIN, StartListener, wait_for_state

from service.app import dkim_signer_for
from service.testing import FakeOllama


async def _mail(sink, count: int, timeout: float = 20) -> EmailMessage:
    async with asyncio.timeout(timeout):
        while len(sink.received) < count:
            await asyncio.sleep(0.02)
    return sink.received[count - 1].message


def _reply(
    request: EmailMessage,
    body: str,
    *,
    sender: str = "Alice <alice@example.com>",
    headers: dict[str, str] | None = None,
) -> EmailMessage:
    reply = EmailMessage()
    reply["From"] = sender
    reply["To"] = request["Reply-To"]
    reply["Subject"] = "Re: " + request["Subject"]
    reply["Message-ID"] = make_msgid(domain="example.com")
    reply["In-Reply-To"] = request["Message-ID"]
    reply["References"] = request["Message-ID"]
    for name, value in (headers or {}).items():
        reply[name] = value
    quoted = "\n".join(
        "> " + line for line in request.get_body(("plain",)).get_content().splitlines()
    )
    reply.set_content(f"{body}\n\nOn Tue, 24 Nov 2026 at 10:00, Mailgate wrote:\n{quoted}\n")
    return reply


async def _send(
    mailgate,
    message: EmailMessage,
    *,
    sender: str = "alice@example.com",
    recipient: str | None = None,
) -> None:
    await aiosmtplib.send(
        message,
        hostname="127.0.0.1",
        port=mailgate.app.inbox.port,
        sender=sender,
        recipients=[recipient or message["To"]],
    )


async def _waiting_request(mailgate, sink, page_server) -> tuple[str, EmailMessage]:
    """Submit a page for alice@example.com; return its id and the request email, once waiting."""
    body = {"url": page_server.base + "/article", "email": "alice@example.com"}
    request_id = (await mailgate.client.post("/requests", json=body)).json()["id"]
    request = await _mail(sink, 1)
    await wait_for_state(mailgate.client, request_id, "waiting")
    return request_id, request


@pytest.fixture
def replying(start_listener: StartListener, fake_ollama: FakeOllama) -> StartListener:
    """A listener whose summaries come from the fake Ollama, so a test can see the reason in a
    reply reach the next prompt."""
    return functools.partial(
        start_listener, MAILGATE_SUMMARIZER="ollama", OLLAMA_HOST=fake_ollama.url
    )


async def test_reject_by_reply_with_reason_then_approve_by_reply(
    replying, page_server, fake_ollama
):
    mailgate, sink = await replying()
    request_id, first = await _waiting_request(mailgate, sink, page_server)

    reason = "It should say that the animals must stay in the water."
    await _send(mailgate, _reply(first, f"No. {reason}\n\nAlice"))
    second = await _mail(sink, 2)
    assert reason in fake_ollama.answered[-1].prompt
    assert second["Subject"].endswith("(round 2)")

    await _send(mailgate, _reply(second, "Yes, looks good now."))
    done = await wait_for_state(mailgate.client, request_id, "approved")
    assert [(r["decision"], r["via"]) for r in done["rounds"]] == [
        ("reject", "reply"),
        ("approve", "reply"),
    ]
    assert reason in done["rounds"][0]["reason"]
    assert len(fake_ollama.answered) == 2


async def test_who_and_what_may_decide(replying, page_server):
    mailgate, sink = await replying()
    request_id, request = await _waiting_request(mailgate, sink, page_server)

    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await _send(mailgate, _reply(request, "yes"), recipient=f"reply+aaaa@{REPLY_DOMAIN}")
    with pytest.raises(aiosmtplib.SMTPRecipientsRefused):
        await _send(mailgate, _reply(request, "yes"), recipient="postmaster@example.net")

    impostor = _reply(request, "Yes", sender="Alice <alice@examp1e.com>")
    with pytest.raises(aiosmtplib.SMTPDataError) as refused:
        await _send(mailgate, impostor, sender="alice@examp1e.com")
    assert refused.value.code == 550

    robot = _reply(request, "Yes, I am away", headers={"Auto-Submitted": "auto-replied"})
    await _send(mailgate, robot)
    unclear = _reply(request, "Can you explain the second paragraph?")
    await _send(mailgate, unclear)
    await _send(mailgate, unclear)
    await _send(mailgate, _reply(request, "Maybe, let me think about it."))
    help_note = await _mail(sink, 2)
    assert "Reply YES to approve or NO to reject" in help_note.get_body(("plain",)).get_content()
    assert help_note["Auto-Submitted"] == "auto-replied"
    await asyncio.sleep(0.3)
    assert len(sink.received) == 2, "one help note per round, never a loop"
    assert (await mailgate.client.get(f"/requests/{request_id}")).json()["state"] == "waiting"

    yes = _reply(request, "Yes")
    await _send(mailgate, yes)
    await _send(mailgate, yes)
    await wait_for_state(mailgate.client, request_id, "approved")
    await _send(mailgate, _reply(request, "No, wait"))
    await _send(mailgate, _reply(request, "No, really"))
    note = await _mail(sink, 3)
    assert "already approved" in note.get_body(("plain",)).get_content()
    await asyncio.sleep(0.3)
    assert len(sink.received) == 3
    done = (await mailgate.client.get(f"/requests/{request_id}")).json()
    assert [r["decision"] for r in done["rounds"]] == ["approve"]

    published = dns_for(dkim_signer_for(mailgate.app.settings))
    for received in sink.received:  # the request, the help note, the "already approved" note
        assert dkim.verify(received.raw, dnsfunc=published)
        assert received.message["X-Mailgate-Request"] == request_id


async def test_size_limit_is_advertised_and_enforced(replying, page_server):
    mailgate, sink = await replying(MAILGATE_INBOUND_MAX_BYTES="20000")
    async with aiosmtplib.SMTP(hostname="127.0.0.1", port=mailgate.app.inbox.port) as client:
        code, _ = await client.ehlo()
        assert code == 250
        assert client.esmtp_extensions.get("size") == "20000"
    _, request = await _waiting_request(mailgate, sink, page_server)
    huge = _reply(request, "Yes\n" + "x" * 30000)
    with pytest.raises(aiosmtplib.SMTPResponseException) as refused:
        await _send(mailgate, huge)
    assert refused.value.code == 552


async def test_copies_of_one_reply_sent_together_decide_once_without_a_note(replying, page_server):
    mailgate, sink = await replying()
    request_id, request = await _waiting_request(mailgate, sink, page_server)
    yes = _reply(request, "Yes")
    await asyncio.gather(*(_send(mailgate, yes) for _ in range(3)))
    await wait_for_state(mailgate.client, request_id, "approved")
    await asyncio.sleep(0.3)
    assert len(sink.received) == 1, "no 'already decided' note about the approver's own reply"
