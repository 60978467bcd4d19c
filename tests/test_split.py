"""Split deployment: two workers, gateway and inbox as separate processes, around either
`mailgate engine` or one Postgres database (resonate-pg; there is no engine process then).

Twenty requests go through approve/reject by link and by reply while one worker is SIGKILLed
mid-run; every request completes exactly once (one outcome callback each), with the rounds
its approver asked for.
"""

from __future__ import annotations

import asyncio
import json
import re
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import dkim
import httpx
import pytest
from dkim_keys import dns_for, signer, write_key
from processes import Process, clean_env, wait_tcp
from smtp_sink import free_port
from support import reply_to

from service.testing import FakeOllama

pytestmark = pytest.mark.slow

REQUESTS = 20
DOMAIN = "mailgate.test"


@pytest.mark.parametrize("engine_kind", ["mailgate-engine", "postgres"])
async def test_split_roles_survive_a_worker_kill(
    tmp_path: Path,
    start_sink,
    page_server,
    callback_sink,
    engine_kind: str,
    request: pytest.FixtureRequest,
):
    sink = await start_sink()
    engine_port, http_port, inbound_port = free_port(), free_port(), free_port()
    base = f"http://127.0.0.1:{http_port}"
    if engine_kind == "postgres":
        shared = {"MAILGATE_ENGINE": request.getfixturevalue("postgres_url")}
    else:
        shared = {"RESONATE_URL": f"http://127.0.0.1:{engine_port}"}
    with FakeOllama(delay_s=0.3) as fake:
        common = {
            **shared,
            "MAILGATE_SECRET": "split-secret-shared-by-every-role",
            "MAILGATE_DKIM_KEY_FILE": str(write_key(tmp_path)),
            "MAILGATE_PUBLIC_URL": base,
            "MAILGATE_HTTP_PORT": str(http_port),
            "MAILGATE_ENGINE_PORT": str(engine_port),
            "MAILGATE_INBOUND_PORT": str(inbound_port),
            "MAILGATE_REPLY_DOMAIN": DOMAIN,
            "MAILGATE_FROM": f"Mailgate <mailgate@{DOMAIN}>",
            "MAILGATE_SUMMARIZER": "ollama",
            "OLLAMA_HOST": fake.url,
            "MAILGATE_NOTIFIER": "smtp",
            "MAILGATE_SMTP_PORT": str(sink.port),
            "MAILGATE_ALLOW_PRIVATE_URLS": "1",
            "MAILGATE_LEASE_TTL": "3s",
        }

        def role(name: str, tag: str) -> Process:
            env = clean_env(**common, MAILGATE_DATA_DIR=str(tmp_path / tag))
            return Process(name, env, tmp_path / f"{tag}.log")

        engines = [role("engine", "engine")] if engine_kind == "mailgate-engine" else []
        workers = [role("worker", "worker1"), role("worker", "worker2")]
        gateway, inbox = role("gateway", "gateway"), role("inbox", "inbox")
        everyone = [*engines, *workers, gateway, inbox]
        client = httpx.AsyncClient(base_url=base, timeout=20)
        try:
            for engine in engines:
                engine.start()
                await wait_tcp(engine_port)
            for process in (*workers, gateway, inbox):
                process.start()
            await gateway.wait_http(base + "/healthz")
            await wait_tcp(inbound_port)

            plan = {}
            for i in range(REQUESTS):
                url = page_server.add(
                    f"/page{i}", f"<p>Page {i} is about tide pools and crabs.</p>"
                )
                body = {
                    "url": url,
                    "email": f"person{i}@example.com",
                    "callback_url": callback_sink.url,
                }
                request_id = (await client.post("/requests", json=body)).json()["id"]
                plan[request_id] = {
                    "approver": f"person{i}@example.com",
                    "via": "reply" if i % 2 else "link",
                    "reject_first": i % 4 < 2,
                }

            async with asyncio.timeout(60):
                while len(sink.received) < 5:
                    await asyncio.sleep(0.05)
            workers[0].kill()

            answered: set[str] = set()
            async with asyncio.timeout(180):
                while len(callback_sink.received) < REQUESTS:
                    for received in list(sink.received):
                        message = received.message
                        if message["Message-ID"] in answered:
                            continue
                        answered.add(message["Message-ID"])
                        await _answer(client, message, plan, inbound_port)
                    await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)
        finally:
            await client.aclose()
            for process in everyone:
                process.terminate()

    outcomes = [json.loads(body) for _, body in callback_sink.received]
    assert sorted(o["id"] for o in outcomes) == sorted(plan), "one callback per request"
    for outcome in outcomes:
        expected = plan[outcome["id"]]
        decisions = [(r["decision"], r["via"]) for r in outcome["rounds"]]
        wanted = [("approve", expected["via"])]
        if expected["reject_first"]:
            wanted.insert(0, ("reject", expected["via"]))
        assert outcome["state"] == "approved"
        assert decisions == wanted, outcome
    published = dns_for(signer(DOMAIN))
    assert all(dkim.verify(r.raw, dnsfunc=published) for r in sink.received), "one shared key"


async def _answer(
    client: httpx.AsyncClient, message: EmailMessage, plan: dict, inbound_port: int
) -> None:
    request_id = next(rid for rid, p in plan.items() if p["approver"] == message["To"])
    step = plan[request_id]
    verdict = (
        "reject" if step["reject_first"] and "(round 2)" not in message["Subject"] else "approve"
    )
    if step["via"] == "link":
        text = message.get_body(("plain",)).get_content()
        link = re.search(r"(http://\S+/decide/[^\s?]+)", text).group(1)
        response = await client.post(
            httpx.URL(link).path,
            json={"verdict": verdict, "reason": "Shorter, please."},
            headers={"accept": "application/json"},
        )
        assert response.status_code in (200, 409), response.text
        return
    answer = "No. Shorter, please." if verdict == "reject" else "Yes"
    await aiosmtplib.send(
        reply_to(message, answer, step["approver"]), hostname="127.0.0.1", port=inbound_port
    )


async def test_split_gateway_shows_why_the_worker_waits(tmp_path: Path, page_server):
    """The gateway shares no memory with the worker: the retry note travels through the engine."""
    engine_port, http_port = free_port(), free_port()
    base = f"http://127.0.0.1:{http_port}"
    with FakeOllama() as fake:
        fake.down()
        env = {
            "RESONATE_URL": f"http://127.0.0.1:{engine_port}",
            "MAILGATE_ENGINE_PORT": str(engine_port),
            "MAILGATE_SECRET": "split-secret-shared-by-every-role",
            "MAILGATE_DKIM_KEY_FILE": str(write_key(tmp_path)),
            "MAILGATE_HTTP_PORT": str(http_port),
            "MAILGATE_SUMMARIZER": "ollama",
            "OLLAMA_HOST": fake.url,
            "MAILGATE_NOTIFIER": "console",
            "MAILGATE_ALLOW_PRIVATE_URLS": "1",
        }
        roles = [
            Process(
                name,
                clean_env(**env, MAILGATE_DATA_DIR=str(tmp_path / name)),
                tmp_path / f"{name}.log",
            )
            for name in ("engine", "worker", "gateway")
        ]
        async with httpx.AsyncClient(base_url=base, timeout=10) as client:
            try:
                roles[0].start()
                await wait_tcp(engine_port)
                roles[1].start()
                roles[2].start()
                await roles[2].wait_http(base + "/healthz")
                body = {"url": page_server.base + "/article", "email": "alice@example.com"}
                request_id = (await client.post("/requests", json=body)).json()["id"]
                view = await _until_detail(client, request_id, "Ollama unreachable")
                assert view["state"] == "summarizing"
                fake.up()
                view = await _until_detail(client, request_id, "waiting for alice@example.com")
                assert view["state"] == "waiting"
            finally:
                for process in reversed(roles):
                    process.terminate()


async def _until_detail(client: httpx.AsyncClient, request_id: str, text: str) -> dict:
    async with asyncio.timeout(60):
        while True:
            view = (await client.get(f"/requests/{request_id}")).json()
            if text in view["detail"]:
                return view
            await asyncio.sleep(0.1)
