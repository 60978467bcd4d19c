"""The request as a real email: Mailgate → SMTP (aiosmtpd sink) → links → decision."""

from __future__ import annotations

import asyncio
import re

from support import local, wait_for_state

from service.reply_tokens import verify_reply_token


async def _next_mail(sink, count: int, timeout: float = 20):
    async with asyncio.timeout(timeout):
        while len(sink.received) < count:
            await asyncio.sleep(0.02)
    return sink.received[count - 1].message


async def test_request_email_links_lead_to_the_confirmation_page(
    start_mailgate, start_sink, page_server
):
    sink = await start_sink()
    mailgate = await start_mailgate(
        recording=False,
        MAILGATE_NOTIFIER="smtp",
        MAILGATE_SMTP_PORT=str(sink.port),
        MAILGATE_REPLY_DOMAIN="mailgate.test",
        MAILGATE_FROM="Mailgate <mailgate@mailgate.test>",
    )
    url = page_server.base + "/article"
    request_id = (
        await mailgate.client.post("/requests", json={"url": url, "email": "alice@example.com"})
    ).json()["id"]
    message = await _next_mail(sink, 1)

    assert message["Subject"] == f"[Mailgate] Approve summary of {url.removeprefix('http://')}"
    assert message["To"] == "alice@example.com"
    assert message["Auto-Submitted"] == "auto-generated"
    assert message["X-Mailgate-Request"] == request_id
    assert message.get_content_type() == "multipart/alternative"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "Reply YES to approve or NO to reject" in text
    token = re.fullmatch(r"reply\+([a-z0-9]+)@mailgate\.test", message["Reply-To"]).group(1)
    promise_id = verify_reply_token(token, secrets=["test-secret"]).promise_id
    assert promise_id.startswith(request_id + ":")

    approve = re.search(r'href="([^"]+/decide/[^"?]+)\?verdict=approve"', html).group(1)
    page = await mailgate.client.get(local(approve) + "?verdict=approve")
    assert page.status_code == 200 and "Review this summary" in page.text
    assert (await mailgate.client.get(f"/requests/{request_id}")).json()["state"] == "waiting"

    await mailgate.client.post(local(approve), data={"verdict": "reject", "reason": "Too vague."})
    second = await _next_mail(sink, 2)
    assert second["Subject"].endswith("(round 2)")
    assert second["In-Reply-To"] == message["Message-ID"]
    assert "Too vague." in second.get_body(("plain",)).get_content()

    link = re.search(r"(http://\S+/decide/[^\s?]+)", second.get_body(("plain",)).get_content())
    await mailgate.client.post(local(link.group(1)), data={"verdict": "approve"})
    done = await wait_for_state(mailgate.client, request_id, "approved")
    assert [r["decision"] for r in done["rounds"]] == ["reject", "approve"]


async def test_permanent_smtp_rejection_fails_the_request(start_mailgate, start_sink, page_server):
    sink = await start_sink(rcpt_replies=["550 5.1.1 No such user"])
    mailgate = await start_mailgate(
        recording=False, MAILGATE_NOTIFIER="smtp", MAILGATE_SMTP_PORT=str(sink.port)
    )
    body = {"url": page_server.base + "/article", "email": "ghost@example.com"}
    request_id = (await mailgate.client.post("/requests", json=body)).json()["id"]
    failed = await wait_for_state(mailgate.client, request_id, "failed")
    assert "550" in failed["detail"] and "ghost@example.com" in failed["detail"]
