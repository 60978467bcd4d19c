"""How requests end: callbacks, fast failures with a clear status, and the SSRF guard end to end."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import time

import pytest
from support import local, wait_for_state

from service.testing import FakeOllama


def _signed(body: bytes, secret: str) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


async def test_callback_once_per_outcome_signed_and_retried(
    start_mailgate, page_server, callback_sink
):
    callback_sink.fail_first = 1
    mailgate = await start_mailgate()
    body = {
        "url": page_server.base + "/article",
        "email": "erin@example.com",
        "callback_url": callback_sink.url,
    }
    request_id = (await mailgate.client.post("/requests", json=body)).json()["id"]
    ask = await mailgate.notifier.wait_for(1)
    await mailgate.client.post(local(ask.decide_url), data={"verdict": "approve"})
    await wait_for_state(mailgate.client, request_id, "approved")

    deadline = time.monotonic() + 20
    while not callback_sink.received and time.monotonic() < deadline:
        await _sleep()
    assert callback_sink.attempts == 2
    assert len(callback_sink.received) == 1
    headers, raw = callback_sink.received[0]
    assert headers["x-mailgate-signature"] == _signed(raw, "test-secret")
    outcome = json.loads(raw)
    assert outcome["id"] == request_id and outcome["state"] == "approved"
    assert outcome["rounds"][0]["decision"] == "approve"
    status = (await mailgate.client.get(f"/requests/{request_id}")).json()
    assert {k: status[k] for k in ("id", "state", "url", "approver", "detail")} == {
        k: outcome[k] for k in ("id", "state", "url", "approver", "detail")
    }
    await _sleep(0.5)
    assert len(callback_sink.received) == 1


async def test_unresolvable_host_fails_at_once_with_a_clear_status(start_mailgate, callback_sink):
    mailgate = await start_mailgate()
    started = time.monotonic()
    body = {
        "url": "http://no-such-host.invalid/page",
        "email": "erin@example.com",
        "callback_url": callback_sink.url,
    }
    request_id = (await mailgate.client.post("/requests", json=body)).json()["id"]
    failed = await wait_for_state(mailgate.client, request_id, "failed", timeout=10)
    assert time.monotonic() - started < 5
    assert failed["detail"] == "cannot resolve host no-such-host.invalid"
    assert failed["rounds"] == []
    assert mailgate.notifier.asks == []
    deadline = time.monotonic() + 10
    while not callback_sink.received and time.monotonic() < deadline:
        await _sleep()
    assert json.loads(callback_sink.received[0][1])["state"] == "failed"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("{base}/article", "loopback"),
        ("http://localhost:{port}/article", "loopback"),
        ("http://[::1]:{port}/article", "loopback"),
    ],
)
async def test_ssrf_guard_refuses_loopback_end_to_end(
    start_mailgate, page_server, target, expected
):
    mailgate = await start_mailgate(MAILGATE_ALLOW_PRIVATE_URLS="0")
    port = page_server.server.server_address[1]
    url = target.format(base=page_server.base, port=port)
    response = await mailgate.client.post(
        "/requests", json={"url": url, "email": "erin@example.com"}
    )
    assert response.status_code == 422
    error = response.json()["error"]
    assert expected in error and "set MAILGATE_ALLOW_PRIVATE_URLS=1" in error, error
    assert page_server.hits.get("/article", 0) == 0


async def test_names_resolving_to_loopback_fail_with_a_clear_status(start_mailgate, page_server):
    """The machine's own name passes the submit-time shape check; the fetcher resolves it, sees
    a loopback (or private) address and refuses before any byte reaches the page or the page
    it redirects to."""
    mailgate = await start_mailgate(MAILGATE_ALLOW_PRIVATE_URLS="0")
    port = page_server.server.server_address[1]
    page_server.redirect("/hop", page_server.base + "/article")
    for path in ("/article", "/hop"):
        url = f"http://{socket.gethostname()}:{port}{path}"
        response = await mailgate.client.post(
            "/requests", json={"url": url, "email": "erin@example.com"}
        )
        failed = await wait_for_state(mailgate.client, response.json()["id"], "failed", timeout=10)
        assert failed["detail"].startswith("refusing to fetch"), failed
    assert page_server.hits == {}


async def test_private_callback_urls_are_refused(start_mailgate):
    mailgate = await start_mailgate(MAILGATE_ALLOW_PRIVATE_URLS="0")
    body = {
        "url": "https://example.com/",
        "email": "erin@example.com",
        "callback_url": "http://169.254.169.254/latest/meta-data",
    }
    response = await mailgate.client.post("/requests", json=body)
    assert response.status_code == 422
    assert response.json()["error"].startswith("callback_url:")


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
    ],
)
async def test_metadata_urls_are_refused_at_submit_even_when_private_ones_are_allowed(
    start_mailgate, url
):
    mailgate = await start_mailgate(MAILGATE_ALLOW_PRIVATE_URLS="1")
    for body in (
        {"url": url, "email": "erin@example.com"},
        {"url": "https://example.com/", "email": "erin@example.com", "callback_url": url},
    ):
        response = await mailgate.client.post("/requests", json=body)
        assert response.status_code == 422, response.text
        assert "cloud metadata address" in response.json()["error"]
        assert "never" in response.json()["error"]


async def test_file_urls_are_refused(start_mailgate):
    mailgate = await start_mailgate(MAILGATE_ALLOW_PRIVATE_URLS="0")
    response = await mailgate.client.post(
        "/requests", json={"url": "file:///etc/passwd", "email": "erin@example.com"}
    )
    assert response.status_code == 422
    assert "only http and https" in response.json()["error"]


@pytest.mark.slow
async def test_llm_slower_than_the_lease_is_called_once_per_round(start_mailgate, page_server):
    with FakeOllama(delay_s=5.0) as fake:
        mailgate = await start_mailgate(
            MAILGATE_SUMMARIZER="ollama", OLLAMA_HOST=fake.url, MAILGATE_LEASE_TTL="2s"
        )
        body = {"url": page_server.base + "/article", "email": "erin@example.com"}
        request_id = (await mailgate.client.post("/requests", json=body)).json()["id"]
        ask = await mailgate.notifier.wait_for(1, timeout=60)
        await mailgate.client.post(
            local(ask.decide_url), data={"verdict": "reject", "reason": "shorter"}
        )
        ask = await mailgate.notifier.wait_for(2, timeout=60)
        await mailgate.client.post(local(ask.decide_url), data={"verdict": "approve"})
        await wait_for_state(mailgate.client, request_id, "approved", timeout=30)
        assert len(fake.chats) == 2
        assert len(mailgate.notifier.asks) == 2


async def _sleep(seconds: float = 0.05) -> None:
    import asyncio

    await asyncio.sleep(seconds)
