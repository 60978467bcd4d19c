"""Split roles, each SIGKILLed at a bad moment: the engine while a round waits, the gateway right
after it accepted a decision, the worker in the middle of a summary. Nothing decided is lost."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest
from dkim_keys import write_key
from processes import Process, clean_env, wait_tcp
from smtp_sink import free_port

from service.testing import FakeOllama

pytestmark = pytest.mark.slow


async def _until(condition, timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


async def _state(client: httpx.AsyncClient, request_id: str, state: str, rounds: int) -> dict:
    async with asyncio.timeout(60):
        while True:
            try:
                view = (await client.get(f"/requests/{request_id}")).json()
            except (httpx.TransportError, ValueError):
                view = {}
            if view.get("state") == state and len(view.get("rounds", [])) == rounds:
                return view
            await asyncio.sleep(0.1)


def _link(message) -> str:
    text = message.get_body(("plain",)).get_content()
    return httpx.URL(re.search(r"(http://\S+/decide/[^\s?]+)", text).group(1)).path


async def test_kill_engine_gateway_and_worker(tmp_path: Path, start_sink, page_server):
    sink = await start_sink()
    engine_port, http_port = free_port(), free_port()
    base = f"http://127.0.0.1:{http_port}"
    with FakeOllama(delay_s=1.5) as fake:
        env = {
            "RESONATE_URL": f"http://127.0.0.1:{engine_port}",
            "MAILGATE_ENGINE_PORT": str(engine_port),
            "MAILGATE_SECRET": "split-secret-shared-by-every-role",
            "MAILGATE_DKIM_KEY_FILE": str(write_key(tmp_path)),
            "MAILGATE_PUBLIC_URL": base,
            "MAILGATE_HTTP_PORT": str(http_port),
            "MAILGATE_SUMMARIZER": "ollama",
            "OLLAMA_HOST": fake.url,
            "MAILGATE_NOTIFIER": "smtp",
            "MAILGATE_SMTP_PORT": str(sink.port),
            "MAILGATE_FROM": "Mailgate <mailgate@mailgate.test>",
            "MAILGATE_ALLOW_PRIVATE_URLS": "1",
            "MAILGATE_LEASE_TTL": "3s",
        }

        def role(name: str) -> Process:
            return Process(
                name,
                clean_env(**env, MAILGATE_DATA_DIR=str(tmp_path / name)),
                tmp_path / f"{name}.log",
            )

        engine, worker, gateway = role("engine"), role("worker"), role("gateway")
        client = httpx.AsyncClient(base_url=base, timeout=10)
        try:
            engine.start()
            await wait_tcp(engine_port)
            worker.start()
            gateway.start()
            await gateway.wait_http(base + "/healthz")
            body = {"url": page_server.base + "/article", "email": "alice@example.com"}
            request_id = (await client.post("/requests", json=body)).json()["id"]
            await _until(lambda: len(sink.received) >= 1)
            await _state(client, request_id, "waiting", 1)

            engine.kill()
            engine.start()
            await wait_tcp(engine_port)
            await _state(client, request_id, "waiting", 1)

            decided = await client.post(
                _link(sink.received[0].message),
                json={"verdict": "reject", "reason": "Mention the crabs."},
                headers={"accept": "application/json"},
            )
            assert decided.status_code == 200, decided.text
            gateway.kill()
            await _until(lambda: len(fake.chats) >= 2)
            worker.kill()
            gateway.start()
            worker.start()
            await gateway.wait_http(base + "/healthz")
            await _until(lambda: len(sink.received) >= 2)
            assert "Mention the crabs." in fake.answered[-1].prompt

            engine.kill()
            engine.start()
            await wait_tcp(engine_port)
            approved = await client.post(
                _link(sink.received[-1].message),
                json={"verdict": "approve"},
                headers={"accept": "application/json"},
            )
            assert approved.status_code == 200, approved.text
            view = await _state(client, request_id, "approved", 2)
            listed = (await client.get("/requests")).json()["requests"]
            assert [v["id"] for v in listed] == [request_id]
        finally:
            await client.aclose()
            for process in (gateway, worker, engine):
                process.terminate()
    assert [r["decision"] for r in view["rounds"]] == ["reject", "approve"]
    assert view["rounds"][0]["reason"] == "Mention the crabs."
    assert len(fake.answered) == 2
