"""Hostile bodies and fields over real HTTP: each gets a 4xx that names the problem, and
nothing is started or decided by it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from support import PageServer, local, wait_for_state

JSON = {"accept": "application/json", "content-type": "application/json"}
LIMIT = 65_536


async def _waiting_round(mailgate, page_server: PageServer):
    body = {"url": page_server.base + "/article", "email": "alice@example.com"}
    request_id = (await mailgate.client.post("/requests", json=body)).json()["id"]
    ask = await mailgate.notifier.wait_for(len(mailgate.notifier.asks) + 1)
    await wait_for_state(mailgate.client, request_id, "waiting")
    return request_id, local(ask.decide_url)


async def _kinds(mailgate, request_id: str) -> list[str]:
    events = (await mailgate.client.get(f"/requests/{request_id}/events")).json()["events"]
    return [event["kind"] for event in events]


async def _chunks(size: int) -> AsyncIterator[bytes]:
    """A body sent without Content-Length (chunked), 8 KiB at a time."""
    sent = 0
    while sent < size:
        yield b" " * 8192
        sent += 8192


async def test_bodies_over_the_limit_are_refused_with_413(start_mailgate, page_server):
    mailgate = await start_mailgate()
    request_id, link = await _waiting_round(mailgate, page_server)
    padded = {"url": page_server.base + "/article", "email": "bob@example.com", "x": "y" * LIMIT}
    declared = await mailgate.client.post("/requests", json=padded)
    assert declared.status_code == 413
    assert declared.json() == {
        "error": f"the body is larger than {LIMIT} bytes (MAILGATE_HTTP_MAX_BYTES)"
    }
    chunked = await mailgate.client.post("/requests", content=_chunks(4 * LIMIT), headers=JSON)
    assert chunked.status_code == 413
    assert "MAILGATE_HTTP_MAX_BYTES" in chunked.json()["error"]
    page = await mailgate.client.post(link, data={"verdict": "approve", "reason": "x" * LIMIT})
    assert page.status_code == 413
    assert "too large" in page.text
    listed = (await mailgate.client.get("/requests")).json()["requests"]
    assert [row["id"] for row in listed] == [request_id]
    assert (await mailgate.client.get(f"/requests/{request_id}")).json()["state"] == "waiting"


async def test_the_limit_is_a_setting(start_mailgate):
    mailgate = await start_mailgate(MAILGATE_HTTP_MAX_BYTES="2048")
    under = {"url": "", "email": "alice@example.com", "pad": "y" * 1900}
    read = await mailgate.client.post("/requests", json=under)
    assert (read.status_code, read.json()["error"]) == (422, "url: a URL is required")
    over = await mailgate.client.post("/requests", json={**under, "pad": "y" * 2100})
    assert over.status_code == 413
    assert "2048 bytes" in over.json()["error"]


UNREADABLE = {
    "truncated": (b'{"url": ', "body: not valid JSON"),
    "not UTF-8": (b"\xff\xfe{}", "body: not valid JSON"),
    "an array": (b'["url", "email"]', "body: a JSON object is required"),
    "30,000 arrays deep": (b"[" * 30_000 + b"]" * 30_000, "body: nested too deeply"),
    "10,000 objects deep": (b'{"a":' * 10_000 + b"1" + b"}" * 10_000, "body: nested too deeply"),
    "a nested field": (
        b'{"url": ' + b"[" * 400 + b"]" * 400 + b', "email": "a@b.c"}',
        "url: a URL",
    ),
}


async def test_json_that_cannot_be_read_is_refused_with_422(start_mailgate):
    mailgate = await start_mailgate()
    for case, (raw, message) in UNREADABLE.items():
        answer = await mailgate.client.post("/requests", content=raw, headers=JSON)
        assert (answer.status_code, answer.json()["error"][: len(message)]) == (422, message), case
        if not message.startswith("body:"):
            continue
        for method, path in (("POST", "/requests/mg-x/decision"), ("DELETE", "/requests/mg-x")):
            elsewhere = await mailgate.client.request(method, path, content=raw, headers=JSON)
            assert elsewhere.status_code == 422, (case, path)
            assert elsewhere.json()["error"].startswith(message), (case, path)
    assert (await mailgate.client.get("/requests")).json()["requests"] == []


HIDDEN = [
    ("url", "http://exa\x00mple.com/", "U+0000"),
    ("url", "http://example.com/a\r\nX-Injected: 1", "U+000D"),
    ("url", "https://example.com/\u202egnp.exe", "RIGHT-TO-LEFT OVERRIDE"),
    ("url", "https://\u200bexample.com/", "ZERO WIDTH SPACE"),
    ("url", "https://example.com/\x1b[31m", "U+001B"),
    ("callback_url", "https://example.com/\x7fhook", "U+007F"),
    ("email", "alice@exa\x00mple.com", "U+0000"),
    ("email", "alice@example.com\r\nBcc: eve@example.com", "U+000D"),
    ("email", "al\u202eice@example.com", "RIGHT-TO-LEFT OVERRIDE"),
    ("email", "alice\u200b@example.com", "ZERO WIDTH SPACE"),
]


async def test_control_and_invisible_characters_in_a_submission(start_mailgate, page_server):
    mailgate = await start_mailgate()
    for field, value, named in HIDDEN:
        body = {"url": page_server.base + "/article", "email": "alice@example.com", field: value}
        answer = await mailgate.client.post("/requests", json=body)
        assert answer.status_code == 422, (field, value)
        assert answer.json()["error"].startswith(f"{field}:"), (field, value)
        assert named in answer.json()["error"], (field, value)
    assert (await mailgate.client.get("/requests")).json()["requests"] == []


async def test_other_scripts_are_welcome_in_urls_and_addresses(start_mailgate, page_server):
    mailgate = await start_mailgate()
    page_server.add("/gr%C3%BC%C3%9Fe", "<html><body><p>Tide pools keep sea water.</p></body>")
    body = {"url": page_server.base + "/grüße", "email": "jörg@bücher.example"}
    answer = await mailgate.client.post("/requests", json=body)
    assert answer.status_code == 202, answer.text
    done = await wait_for_state(mailgate.client, answer.json()["id"], "waiting")
    assert done["approver"] == "jörg@bücher.example"
    assert done["url"].endswith("/gr%C3%BC%C3%9Fe")


REFUSED_REASONS = {
    "NUL": ("fine\x00", "U+0000"),
    "ANSI escapes": ("\x1b[2J\x1b[31mapproved by security\x1b[0m", "U+001B"),
    "a bidi override": ("looks good \u202eevah I\u202c", "RIGHT-TO-LEFT OVERRIDE"),
    "5,001 characters": ("x" * 5001, "at most 5000 characters"),
    "not text": (["yes"], "reason: text"),
}


async def test_reasons_refused_decide_and_cancel_nothing(start_mailgate, page_server):
    mailgate = await start_mailgate()
    request_id, link = await _waiting_round(mailgate, page_server)
    for case, (reason, named) in REFUSED_REASONS.items():
        by_link = await mailgate.client.post(link, json={"verdict": "reject", "reason": reason})
        by_api = await mailgate.client.post(
            f"/requests/{request_id}/decision", json={"verdict": "approve", "reason": reason}
        )
        cancel = await mailgate.client.request(
            "DELETE", f"/requests/{request_id}", json={"reason": reason}
        )
        answers = [by_link, by_api, cancel]
        if isinstance(reason, str):
            answers.append(
                await mailgate.client.post(link, data={"verdict": "reject", "reason": reason})
            )
        for answer in answers:
            assert answer.status_code == 422, (case, answer.request.url)
            assert named in answer.text, case
    assert (await mailgate.client.get(f"/requests/{request_id}")).json()["state"] == "waiting"
    kinds = await _kinds(mailgate, request_id)
    assert "decided" not in kinds
    assert "cancel_requested" not in kinds


async def test_a_reason_in_any_script_on_several_lines_is_kept_as_written(
    start_mailgate, page_server
):
    mailgate = await start_mailgate()
    request_id, link = await _waiting_round(mailgate, page_server)
    reason = "Nein — zu lang.\n\tالفقرة الثانية غير واضحة 👩‍👩‍👧\r\nזה בסדר"
    answer = await mailgate.client.post(link, json={"verdict": "reject", "reason": reason})
    assert answer.status_code == 200, answer.text
    events = (await mailgate.client.get(f"/requests/{request_id}/events")).json()["events"]
    decided = [event for event in events if event["kind"] == "decided"]
    assert [event["data"]["reason"] for event in decided] == [reason]


async def _raw(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    answer = await reader.read(200)
    writer.close()
    return answer


async def test_oversized_request_heads_are_refused_by_the_server(start_mailgate):
    """A megabyte of header, of path, or 100,000 headers: the HTTP server (h11 under uvicorn)
    stops reading past its buffer and answers 400 before any route runs."""
    mailgate = await start_mailgate()
    port = mailgate.app.http_port
    heads = [
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 1_000_000 + b"\r\n\r\n",
        b"GET /decide/" + b"a" * 1_000_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n"
        + b"".join(b"X-%d: a\r\n" % n for n in range(100_000))
        + b"\r\n",
    ]
    for head in heads:
        assert (await _raw(port, head)).startswith(b"HTTP/1.1 400 "), head[:40]
    assert (await mailgate.client.get("/healthz")).json() == {"ok": True}
