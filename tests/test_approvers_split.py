"""Votes racing across processes: two gateways and a reply listener, each its own process,
receive the answers of one round at the same instant; the round is decided exactly once, with
the verdict the policy gives whatever order the votes landed in."""

from __future__ import annotations

import asyncio
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import httpx
import pytest
from dkim_keys import write_key
from processes import Process, clean_env, wait_tcp
from smtp_sink import Sink, free_port
from support import PageServer, wait_for_state

pytestmark = pytest.mark.slow

DOMAIN = "mailgate.test"
PEOPLE = ["ann@example.com", "ben@example.com", "cat@example.com"]


def _path(message: EmailMessage) -> str:
    text = message.get_body(("plain",)).get_content()
    line = next(x for x in text.splitlines() if x.startswith("Approve: "))
    return "/" + line.removeprefix("Approve: ").split("?")[0].split("/", 3)[3]


def _answer(message: EmailMessage, sender: str, text: str) -> EmailMessage:
    reply = EmailMessage()
    reply["From"] = sender
    reply["To"] = message["Reply-To"]
    reply["Subject"] = "Re: " + str(message["Subject"])
    reply.set_content(text)
    return reply


async def _mails(sink: Sink, request_id: str, count: int) -> dict[str, EmailMessage]:
    async with asyncio.timeout(60):
        while True:
            mine = {
                r.rcpt_tos[0]: r.message
                for r in sink.received
                if r.message["X-Mailgate-Request"] == request_id
            }
            if len(mine) >= count:
                return mine
            await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    ("policy", "state"),
    [({"min": 2}, "approved"), ("all", "summarizing")],
    ids=["min-2-of-3", "all"],
)
async def test_racing_votes_decide_once_with_the_policys_verdict(
    tmp_path: Path, start_sink, page_server: PageServer, policy: object, state: str
) -> None:
    """Ann and Ben approve (through two gateways), Cat rejects by reply, all at once: two of
    three approve whatever the order; under ``all`` Cat's no rejects whatever the order."""
    sink = await start_sink()
    engine_port, inbound_port = free_port(), free_port()
    ports = [free_port(), free_port()]
    common = {
        "RESONATE_URL": f"http://127.0.0.1:{engine_port}",
        "MAILGATE_SECRET": "split-approvers-secret-0123456789",
        "MAILGATE_DKIM_KEY_FILE": str(write_key(tmp_path)),
        "MAILGATE_PUBLIC_URL": f"http://127.0.0.1:{ports[0]}",
        "MAILGATE_ENGINE_PORT": str(engine_port),
        "MAILGATE_INBOUND_PORT": str(inbound_port),
        "MAILGATE_REPLY_DOMAIN": DOMAIN,
        "MAILGATE_FROM": f"Mailgate <mailgate@{DOMAIN}>",
        "MAILGATE_SUMMARIZER": "extractive",
        "MAILGATE_NOTIFIER": "smtp",
        "MAILGATE_SMTP_PORT": str(sink.port),
        "MAILGATE_ALLOW_PRIVATE_URLS": "1",
    }

    def role(name: str, tag: str, **extra: str) -> Process:
        env = clean_env(**common, MAILGATE_DATA_DIR=str(tmp_path / tag), **extra)
        return Process(name, env, tmp_path / f"{tag}.log")

    engine = role("engine", "engine")
    worker = role("worker", "worker")
    gateways = [
        role("gateway", f"gateway{i}", MAILGATE_HTTP_PORT=str(port)) for i, port in enumerate(ports)
    ]
    inbox = role("inbox", "inbox")
    everyone = [engine, worker, *gateways, inbox]
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    clients = [httpx.AsyncClient(base_url=base, timeout=20) for base in bases]
    try:
        engine.start()
        await wait_tcp(engine_port)
        for process in (worker, *gateways, inbox):
            process.start()
        for gateway, base in zip(gateways, bases, strict=True):
            await gateway.wait_http(base + "/readyz")
        await wait_tcp(inbound_port)
        body = {"url": page_server.base + "/article", "approvers": PEOPLE, "policy": policy}
        request_id = (await clients[0].post("/requests", json=body)).json()["id"]
        mails = await _mails(sink, request_id, 3)
        ann, ben, cat = (mails[p] for p in PEOPLE)

        await asyncio.gather(
            clients[0].post(
                _path(ann), json={"verdict": "approve"}, headers={"accept": "application/json"}
            ),
            clients[1].post(
                _path(ben), json={"verdict": "approve"}, headers={"accept": "application/json"}
            ),
            aiosmtplib.send(
                _answer(cat, PEOPLE[2], "No. It misses the crabs."),
                hostname="127.0.0.1",
                port=inbound_port,
            ),
        )
        async with asyncio.timeout(60):
            while True:
                trail = (await clients[1].get(f"/requests/{request_id}/events")).json()
                decided = [e for e in trail["events"] if e["kind"] == "decided"]
                if decided:
                    break
                await asyncio.sleep(0.05)
        if state == "approved":
            view = await wait_for_state(clients[1], request_id, "approved")
        else:
            view = await _second_round(clients[1], request_id)
        trail = (await clients[0].get(f"/requests/{request_id}/events")).json()
    finally:
        for client in clients:
            await client.aclose()
        for process in everyone:
            process.terminate()
    decided = [e for e in trail["events"] if e["kind"] == "decided"]
    voted = [e for e in trail["events"] if e["kind"] == "voted"]
    assert len(decided) == 1, "the round is decided exactly once"
    late = [e for e in trail["events"] if e["kind"] == "refused"]
    assert all(e["data"]["why"] == "already decided" for e in late)
    heard = sorted(e["data"]["by"] for e in voted + late)
    answers = [(e["seq"], e["kind"], e["data"]["by"]) for e in voted + late]
    assert heard == sorted(PEOPLE), f"every answer is a vote, or refused as too late: {answers}"
    assert decided[0]["seq"] > max(e["seq"] for e in voted), "decided after its votes"
    assert trail["verification"]["verdict"] == "intact"
    first = view["rounds"][0]
    if state == "approved":
        assert first["decision"] == "approve"
        assert set(first["by"].split(", ")) == {PEOPLE[0], PEOPLE[1]}
    else:
        assert (first["decision"], first["by"]) == ("reject", PEOPLE[2])
        assert first["reason"] == f"{PEOPLE[2]}: It misses the crabs."


async def _second_round(client: httpx.AsyncClient, request_id: str) -> dict:
    async with asyncio.timeout(60):
        while True:
            view = (await client.get(f"/requests/{request_id}")).json()
            if len(view["rounds"]) == 2:
                return view
            await asyncio.sleep(0.05)
