"""Reminders and expiry are durable timers: SIGKILL the process that holds them and they still
come, each once (a resend after a crash keeps its Message-ID)."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from dkim_keys import write_key
from processes import Process, clean_env, serve_env, wait_tcp
from resonate.resonate import Resonate
from smtp_sink import Sink, StartSink, free_port
from support import REPLY_DOMAIN, PageServer, wait_for_state

pytestmark = pytest.mark.slow

DEADLINE = {
    "MAILGATE_DECISION_TTL": "12s",
    "MAILGATE_REMIND_AFTER": "3s",
    "MAILGATE_REMIND_EVERY": "3s",
}


async def _until(condition: Callable[[], bool], timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


def _reminders(sink: Sink) -> Counter[str]:
    """Reminders received, by Message-ID."""
    return Counter(
        str(r.message["Message-ID"])
        for r in sink.received
        if str(r.message["Subject"]).startswith("[Mailgate] Reminder")
    )


async def _timer(engine_url: str, request_id: str, state: str) -> None:
    """Until the engine holds a timer of the request's deadline watcher in ``state``: pending
    once the watcher sleeps, resolved once the engine fired it (the first reminder is due)."""
    resonate = Resonate(url=engine_url, group="probe", pid="probe", env={}, sources=[])
    try:
        async with asyncio.timeout(60):
            while True:
                page = await resonate.promises.search(
                    state=state,
                    tags={"resonate:timer": "true", "resonate:origin": request_id},
                    limit=10,
                    cursor=None,
                )
                if page.promises:
                    return
                await asyncio.sleep(0.1)
    finally:
        await resonate.stop()


def _common(sink: Sink, **values: str) -> dict[str, str]:
    return {
        "MAILGATE_NOTIFIER": "smtp",
        "MAILGATE_SMTP_PORT": str(sink.port),
        "MAILGATE_FROM": f"Mailgate <mailgate@{REPLY_DOMAIN}>",
        "MAILGATE_SUMMARIZER": "extractive",
        "MAILGATE_LEASE_TTL": "3s",
        **DEADLINE,
        **values,
    }


async def test_reminders_survive_a_kill_of_serve_between_two(
    tmp_path: Path, start_sink: StartSink, page_server: PageServer
) -> None:
    sink = await start_sink()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = serve_env(tmp_path, port, MAILGATE_SECRET="deadline-crash-secret", **_common(sink))
    serve = Process("serve", env, tmp_path / "serve.log")
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        try:
            serve.start()
            await serve.wait_http(base + "/healthz")
            body = {"url": page_server.base + "/article", "email": "alice@example.com"}
            request_id = (await client.post("/requests", json=body)).json()["id"]
            await _until(lambda: len(_reminders(sink)) >= 1)
            serve.kill()
            serve.start()
            await serve.wait_http(base + "/healthz")
            done = await wait_for_state(client, request_id, "expired", timeout=60)
            await _until(
                lambda: any("No longer" in str(r.message["Subject"]) for r in sink.received)
            )
        finally:
            serve.terminate()
    reminders = _reminders(sink)
    assert len(reminders) == 3, f"reminders at 3, 6 and 9 s: {reminders}"
    assert done["rounds"][0]["reminders"] == 3
    subjects = [str(r.message["Subject"]) for r in sink.received]
    assert sum(s.startswith("[Mailgate] Approve") for s in subjects) == 1
    assert sum("No longer waiting" in s for s in subjects) == 1


async def test_a_reminder_due_while_the_worker_is_dead_comes_once_it_is_back(
    tmp_path: Path, start_sink: StartSink, page_server: PageServer
) -> None:
    """Split roles: the engine keeps the timer, the worker that sends the reminder is SIGKILLed
    just before it is due and comes back after; the reminder is sent then, once."""
    sink = await start_sink()
    engine_port, http_port = free_port(), free_port()
    env = clean_env(
        RESONATE_URL=f"http://127.0.0.1:{engine_port}",
        MAILGATE_SECRET="split-deadline-secret-0123456789",
        MAILGATE_DATA_DIR=str(tmp_path / "engine-data"),
        MAILGATE_ENGINE_PORT=str(engine_port),
        MAILGATE_HTTP_PORT=str(http_port),
        MAILGATE_ALLOW_PRIVATE_URLS="1",
        MAILGATE_DKIM_KEY_FILE=str(write_key(tmp_path)),
        **_common(sink),
    )
    engine = Process("engine", env, tmp_path / "engine.log")
    gateway = Process(
        "gateway", {**env, "MAILGATE_DATA_DIR": str(tmp_path / "gw")}, tmp_path / "gateway.log"
    )
    worker = Process(
        "worker", {**env, "MAILGATE_DATA_DIR": str(tmp_path / "wk")}, tmp_path / "worker.log"
    )
    base = f"http://127.0.0.1:{http_port}"
    async with httpx.AsyncClient(base_url=base, timeout=10) as client:
        try:
            engine.start()
            await wait_tcp(engine_port)
            gateway.start()
            worker.start()
            await gateway.wait_http(base + "/readyz")
            body = {"url": page_server.base + "/article", "email": "alice@example.com"}
            request_id = (await client.post("/requests", json=body)).json()["id"]
            engine_url = f"http://127.0.0.1:{engine_port}"
            await _timer(engine_url, request_id, "pending")
            worker.kill()
            await _timer(engine_url, request_id, "resolved")
            assert _reminders(sink) == Counter(), "no worker, no reminder"
            worker.start()
            await _until(lambda: len(_reminders(sink)) >= 1)
            done = await wait_for_state(client, request_id, "expired", timeout=60)
        finally:
            for process in (worker, gateway, engine):
                process.terminate()
    reminders = _reminders(sink)
    assert all(count == 1 for count in reminders.values()), reminders
    assert 2 <= len(reminders) <= 3, "overdue reminders collapse into one"
    assert done["state"] == "expired"
