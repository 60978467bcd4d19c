"""The status page says why a request is taking long, in words an operator can act on."""

from __future__ import annotations

import asyncio

from service.testing import FakeOllama


async def _detail_containing(client, request_id: str, text: str, timeout: float = 20) -> dict:
    async with asyncio.timeout(timeout):
        while True:
            view = (await client.get(f"/requests/{request_id}")).json()
            if text in view["detail"]:
                return view
            await asyncio.sleep(0.05)


async def test_ollama_down_is_shown_then_cleared(start_mailgate, page_server):
    with FakeOllama() as fake:
        fake.down()
        mailgate = await start_mailgate(MAILGATE_SUMMARIZER="ollama", OLLAMA_HOST=fake.url)
        body = {"url": page_server.base + "/article", "email": "alice@example.com"}
        request_id = (await mailgate.client.post("/requests", json=body)).json()["id"]
        view = await _detail_containing(mailgate.client, request_id, "Ollama unreachable")
        assert view["state"] == "summarizing"
        assert "ollama serve" in view["detail"]
        fake.up()
        view = await _detail_containing(
            mailgate.client, request_id, "waiting for alice", timeout=30
        )
        assert view["state"] == "waiting"


async def test_busy_mail_server_is_shown(start_mailgate, start_sink, page_server):
    sink = await start_sink(rcpt_replies=["451 4.7.1 Greylisted, try again"] * 3)
    mailgate = await start_mailgate(
        recording=False, MAILGATE_NOTIFIER="smtp", MAILGATE_SMTP_PORT=str(sink.port)
    )
    body = {"url": page_server.base + "/article", "email": "alice@example.com"}
    request_id = (await mailgate.client.post("/requests", json=body)).json()["id"]
    view = await _detail_containing(mailgate.client, request_id, "451")
    assert view["state"] == "summarizing"
    assert "retrying" in view["detail"]
    view = await _detail_containing(mailgate.client, request_id, "waiting for alice", timeout=30)
    assert len(sink.received) == 1
