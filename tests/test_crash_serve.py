"""SIGKILL `mailgate serve` at every stage of a request; after each restart it carries on.

Nothing decided is lost, the page is downloaded once, and the LLM answers exactly once per
round, because every step before the kill was checkpointed in the durable engine.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import httpx
import pytest
from processes import Process, serve_env
from smtp_sink import Sink, StartSink, free_port
from support import REPLY_DOMAIN, PageServer, local, wait_for_state

from service.testing import FakeOllama

pytestmark = pytest.mark.slow


async def _until(condition: Callable[[], bool], timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


def _link(message: EmailMessage) -> str:
    text = message.get_body(("plain",)).get_content()
    return re.search(r"(http://\S+/decide/[^\s?]+)", text).group(1)


def _serve(tmp_path: Path, port: int, sink: Sink, **settings: str) -> Process:
    """`mailgate serve` on ``port``, mailing through ``sink``; the short lease lets each restart
    take over the work the killed process held."""
    env = serve_env(
        tmp_path,
        port,
        MAILGATE_PUBLIC_URL=f"http://127.0.0.1:{port}",
        MAILGATE_NOTIFIER="smtp",
        MAILGATE_SMTP_PORT=str(sink.port),
        MAILGATE_FROM=f"Mailgate <mailgate@{REPLY_DOMAIN}>",
        MAILGATE_SECRET="crash-secret",
        MAILGATE_LEASE_TTL="3s",
        **settings,
    )
    return Process("serve", env, tmp_path / "serve.log")


async def test_kill_at_every_stage(
    tmp_path: Path, start_sink: StartSink, page_server: PageServer
) -> None:
    sink = await start_sink()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with FakeOllama(delay_s=2.0) as fake:
        serve = _serve(tmp_path, port, sink, MAILGATE_SUMMARIZER="ollama", OLLAMA_HOST=fake.url)
        client = httpx.AsyncClient(base_url=base, timeout=10)
        try:
            serve.start()
            await serve.wait_http(base + "/healthz")
            url = page_server.base + "/article"
            submitted = await client.post(
                "/requests", json={"url": url, "email": "alice@example.com"}
            )
            request_id = submitted.json()["id"]

            # (a) right after the download: the LLM call is in flight.
            await _until(lambda: len(fake.chats) >= 1)
            serve.kill()
            assert page_server.hits["/article"] == 1

            # (b) after the summary is checkpointed: the mail server is busy (451).
            sink.handler.rcpt_replies[:] = ["451 4.3.0 Try later"] * 1000
            serve.start()
            await _until(lambda: sink.handler.rcpt_attempts >= 1, timeout=60)
            serve.kill()
            assert len(fake.answered) == 1

            # (c) after the ask step: the email went out and the round waits.
            sink.handler.rcpt_replies.clear()
            serve.start()
            await serve.wait_http(base + "/healthz")
            await _until(lambda: len(sink.received) >= 1, timeout=60)
            state = await wait_for_state(client, request_id, "waiting", timeout=60)
            serve.kill()

            # (d) while waiting on the human: a restart changes nothing and sends nothing.
            serve.start()
            await serve.wait_http(base + "/healthz")
            assert (await client.get(f"/requests/{request_id}")).json()["state"] == "waiting"
            await asyncio.sleep(1.5)
            serve.kill()
            serve.start()
            await serve.wait_http(base + "/healthz")
            assert len(sink.received) == 1
            assert len(fake.answered) == 1
            assert page_server.hits["/article"] == 1

            # (e) right after the decision is posted.
            reason = "Say that lifting animals harms them."
            decided = await client.post(
                local(_link(sink.received[0].message)),
                json={"verdict": "reject", "reason": reason},
                headers={"accept": "application/json"},
            )
            assert decided.status_code == 200, decided.text
            serve.kill()
            serve.start()
            await serve.wait_http(base + "/healthz")
            await _until(lambda: len(sink.received) >= 2, timeout=60)
            assert reason in fake.answered[-1].prompt
            approved = await client.post(
                local(_link(sink.received[1].message)),
                json={"verdict": "approve"},
                headers={"accept": "application/json"},
            )
            assert approved.status_code == 200
            state = await wait_for_state(client, request_id, "approved", timeout=60)
        finally:
            await client.aclose()
            serve.terminate()
    assert [r["decision"] for r in state["rounds"]] == ["reject", "approve"]
    assert state["rounds"][0]["reason"] == reason
    assert len(fake.answered) == 2, [c.prompt[-80:] for c in fake.answered]
    assert page_server.hits["/article"] == 1
    assert len(sink.received) == 2


async def test_reply_acknowledged_then_killed_is_not_lost(
    tmp_path: Path, start_sink: StartSink, page_server: PageServer
) -> None:
    """SIGKILL right after the listener's 250 for a "yes": the restart completes approved."""
    sink = await start_sink()
    port, inbound = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    serve = _serve(
        tmp_path,
        port,
        sink,
        MAILGATE_SUMMARIZER="extractive",
        MAILGATE_REPLY_DOMAIN=REPLY_DOMAIN,
        MAILGATE_INBOUND_PORT=str(inbound),
    )
    client = httpx.AsyncClient(base_url=base, timeout=10)
    try:
        serve.start()
        await serve.wait_http(base + "/healthz")
        body = {"url": page_server.base + "/article", "email": "alice@example.com"}
        request_id = (await client.post("/requests", json=body)).json()["id"]
        await _until(lambda: len(sink.received) >= 1)
        request = sink.received[0].message
        reply = EmailMessage()
        reply["From"] = "alice@example.com"
        reply["To"] = request["Reply-To"]
        reply["Subject"] = "Re: " + request["Subject"]
        reply["In-Reply-To"] = request["Message-ID"]
        reply.set_content("Yes, ship it.")
        async with aiosmtplib.SMTP(hostname="127.0.0.1", port=inbound) as smtp:
            errors, answer = await smtp.send_message(reply)
            assert errors == {} and answer.startswith("OK")
            serve.kill()
        serve.start()
        await serve.wait_http(base + "/healthz")
        state = await wait_for_state(client, request_id, "approved", timeout=60)
    finally:
        await client.aclose()
        serve.terminate()
    assert state["rounds"][0]["via"] == "reply"
