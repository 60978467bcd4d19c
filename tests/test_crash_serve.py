"""SIGKILL `mailgate serve` at every stage of a request; after each restart it carries on.

Nothing decided is lost, the page is downloaded once, and the LLM answers exactly once per
round, because every step before the kill was checkpointed in the durable engine.
"""

from __future__ import annotations

import asyncio
import re
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import httpx
import pytest
from processes import Process, clean_env
from smtp_sink import free_port

from service.testing import FakeOllama

pytestmark = pytest.mark.slow


async def _until(condition, timeout: float = 30, what: str = "condition") -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


def _link(message) -> str:
    text = message.get_body(("plain",)).get_content()
    return re.search(r"(http://\S+/decide/[^\s?]+)", text).group(1)


async def test_kill_at_every_stage(tmp_path: Path, start_sink, page_server):
    sink = await start_sink()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    with FakeOllama(delay_s=2.0) as fake:
        serve = Process(
            "serve",
            clean_env(
                MAILGATE_DATA_DIR=str(tmp_path / "data"),
                MAILGATE_HTTP_PORT=str(port),
                MAILGATE_PUBLIC_URL=base,
                MAILGATE_SUMMARIZER="ollama",
                OLLAMA_HOST=fake.url,
                MAILGATE_NOTIFIER="smtp",
                MAILGATE_SMTP_PORT=str(sink.port),
                MAILGATE_FROM="Mailgate <mailgate@mailgate.test>",
                MAILGATE_ALLOW_PRIVATE_URLS="1",
                MAILGATE_SECRET="crash-secret",
                MAILGATE_LEASE_TTL="3s",
            ),
            tmp_path / "serve.log",
        )
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
            state = await _wait_state(client, request_id, "waiting")
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
                _path(_link(sink.received[0].message)),
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
                _path(_link(sink.received[1].message)),
                json={"verdict": "approve"},
                headers={"accept": "application/json"},
            )
            assert approved.status_code == 200
            state = await _wait_state(client, request_id, "approved")
        finally:
            await client.aclose()
            serve.terminate()
    assert [r["decision"] for r in state["rounds"]] == ["reject", "approve"]
    assert state["rounds"][0]["reason"] == reason
    assert len(fake.answered) == 2, [c.prompt[-80:] for c in fake.answered]
    assert page_server.hits["/article"] == 1
    assert len(sink.received) == 2


def _path(url: str) -> str:
    return httpx.URL(url).path


async def _wait_state(client: httpx.AsyncClient, request_id: str, state: str) -> dict:
    async with asyncio.timeout(60):
        while True:
            body = (await client.get(f"/requests/{request_id}")).json()
            if body["state"] == state:
                return body
            await asyncio.sleep(0.1)


async def test_reply_acknowledged_then_killed_is_not_lost(tmp_path: Path, start_sink, page_server):
    """SIGKILL right after the listener's 250 for a "yes": the restart completes approved."""
    sink = await start_sink()
    port, inbound = free_port(), free_port()
    base = f"http://127.0.0.1:{port}"
    serve = Process(
        "serve",
        clean_env(
            MAILGATE_DATA_DIR=str(tmp_path / "data"),
            MAILGATE_HTTP_PORT=str(port),
            MAILGATE_PUBLIC_URL=base,
            MAILGATE_SUMMARIZER="extractive",
            MAILGATE_NOTIFIER="smtp",
            MAILGATE_SMTP_PORT=str(sink.port),
            MAILGATE_FROM="Mailgate <mailgate@mailgate.test>",
            MAILGATE_REPLY_DOMAIN="mailgate.test",
            MAILGATE_INBOUND_PORT=str(inbound),
            MAILGATE_ALLOW_PRIVATE_URLS="1",
            MAILGATE_SECRET="crash-secret",
            MAILGATE_LEASE_TTL="3s",
        ),
        tmp_path / "serve.log",
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
        state = await _wait_state(client, request_id, "approved")
    finally:
        await client.aclose()
        serve.terminate()
    assert state["rounds"][0]["via"] == "reply"
