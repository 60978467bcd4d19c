"""The whole approval loop in one process: submit → summary → link → reject → re-ask → approve."""

from __future__ import annotations

import pytest
from support import PageServer, local, wait_for_state

from service.testing import FakeOllama


async def test_reject_with_reason_then_approve(
    start_mailgate, page_server: PageServer, fake_ollama: FakeOllama
):
    mailgate = await start_mailgate(
        MAILGATE_SUMMARIZER="ollama", OLLAMA_HOST=fake_ollama.url, MAILGATE_MODEL="llama3.1"
    )
    client = mailgate.client
    url = page_server.base + "/article"

    submitted = await client.post("/requests", json={"url": url, "email": "alice@example.com"})
    assert submitted.status_code == 202, submitted.text
    request_id = submitted.json()["id"]
    again = await client.post("/requests", json={"url": url, "email": "Alice@Example.com"})
    assert (again.status_code, again.json()["id"]) == (200, request_id)

    first = await mailgate.notifier.wait_for(1)
    assert first.round == 1 and first.approver == "alice@example.com"
    waiting = await wait_for_state(client, request_id, "waiting")
    assert waiting["rounds"][0]["summarizer"] == "ollama"
    assert waiting["rounds"][0]["model"] == "llama3.1"

    page = await client.get(local(first.decide_url), headers={"accept": "text/html"})
    assert page.status_code == 200
    assert "Approve" in page.text and "Reject" in page.text
    assert (await client.get(f"/requests/{request_id}")).json()["state"] == "waiting"

    reason = "Mention that visitors must not lift animals."
    rejected = await client.post(
        local(first.decide_url), data={"verdict": "reject", "reason": reason}
    )
    assert rejected.status_code == 200
    assert "new summary" in rejected.text

    second = await mailgate.notifier.wait_for(2)
    assert second.round == 2 and second.previous_reason == reason
    assert len(fake_ollama.chats) == 2
    assert reason in fake_ollama.chats[1].prompt
    assert first.summary in fake_ollama.chats[1].prompt

    approved = await client.post(
        local(second.decide_url),
        json={"verdict": "approve"},
        headers={"accept": "application/json"},
    )
    assert approved.status_code == 200 and approved.json()["accepted"]

    done = await wait_for_state(client, request_id, "approved")
    assert [r["decision"] for r in done["rounds"]] == ["reject", "approve"]
    assert done["rounds"][0]["reason"] == reason
    assert {r["via"] for r in done["rounds"]} == {"link"}
    assert len(fake_ollama.chats) == 2

    replay = await client.post(
        local(second.decide_url), json={"verdict": "reject"}, headers={"accept": "application/json"}
    )
    assert replay.status_code == 409
    assert replay.json()["decision"]["verdict"] == "approve"
    assert (await client.get(f"/requests/{request_id}")).json()["state"] == "approved"

    assert (await client.get("/readyz")).json() == {"ready": True}
    metrics = (await client.get("/metrics")).text
    assert 'mailgate_decisions_total{verdict="reject",via="link"} 1.0' in metrics
    assert 'mailgate_decisions_total{verdict="approve",via="link"} 1.0' in metrics
    assert 'mailgate_requests_total{state="approved"} 1.0' in metrics
    assert 'mailgate_emails_total{notifier="recording",outcome="sent"} 2.0' in metrics


async def test_extractive_runs_without_any_ollama(start_mailgate, page_server: PageServer):
    mailgate = await start_mailgate(MAILGATE_SUMMARIZER="auto", OLLAMA_HOST="http://127.0.0.1:9")
    client = mailgate.client
    submitted = await client.post(
        "/requests", json={"url": page_server.base + "/article", "email": "bob@example.com"}
    )
    request_id = submitted.json()["id"]
    ask = await mailgate.notifier.wait_for(1)
    assert "tide" in ask.summary.lower()
    assert "tracking" not in ask.summary and "Copyright" not in ask.summary
    await client.post(local(ask.decide_url), data={"verdict": "approve"})
    done = await wait_for_state(client, request_id, "approved")
    assert done["rounds"][0]["summarizer"] == "extractive"


async def test_repeat_starts_a_new_generation_only_when_finished(
    start_mailgate, page_server: PageServer
):
    mailgate = await start_mailgate()
    client = mailgate.client
    body = {"url": page_server.base + "/article", "email": "carol@example.com"}
    first_id = (await client.post("/requests", json=body)).json()["id"]
    pending_repeat = await client.post("/requests", json={**body, "repeat": True})
    assert (pending_repeat.status_code, pending_repeat.json()["id"]) == (200, first_id)

    ask = await mailgate.notifier.wait_for(1)
    await client.post(local(ask.decide_url), data={"verdict": "approve"})
    await wait_for_state(client, first_id, "approved")

    same = await client.post("/requests", json=body)
    assert (same.status_code, same.json()["id"]) == (200, first_id)
    fresh = await client.post("/requests", json={**body, "repeat": True})
    assert fresh.status_code == 202 and fresh.json()["id"] != first_id
    await mailgate.notifier.wait_for(2)


async def test_bad_submissions_are_refused_with_a_reason(start_mailgate):
    client = (await start_mailgate(MAILGATE_ALLOWED_APPROVERS="@example.com")).client
    cases = [
        ({"url": "ftp://example.com/x", "email": "a@example.com"}, "only http and https"),
        ({"url": "not a url", "email": "a@example.com"}, "url"),
        ({"url": "https://example.com/", "email": "nobody"}, "email"),
        (
            {"url": "https://example.com/", "email": "eve@evil.example"},
            "MAILGATE_ALLOWED_APPROVERS",
        ),
        ({"email": "a@example.com"}, "url: a URL is required"),
    ]
    for body, message in cases:
        response = await client.post("/requests", json=body)
        assert response.status_code == 422, body
        assert message in response.json()["error"], response.json()


@pytest.mark.browser
async def test_browser_fetcher_summarizes_script_written_text(
    start_mailgate, page_server: PageServer
):
    page_server.add(
        "/spa",
        "<html><body><div id=app></div><script>document.getElementById('app').innerText ="
        " 'Kelp forests grow up to half a metre a day. They shelter seals and otters.';"
        "</script></body></html>",
    )
    mailgate = await start_mailgate(MAILGATE_FETCHER="browser")
    body = {"url": page_server.base + "/spa", "email": "frank@example.com"}
    request_id = (await mailgate.client.post("/requests", json=body)).json()["id"]
    ask = await mailgate.notifier.wait_for(1, timeout=60)
    assert "Kelp forests" in ask.summary
    await mailgate.client.post(local(ask.decide_url), data={"verdict": "approve"})
    await wait_for_state(mailgate.client, request_id, "approved")


async def test_listing_shows_pending_requests_first(start_mailgate, page_server: PageServer):
    mailgate = await start_mailgate()
    client = mailgate.client
    done_id = (
        await client.post(
            "/requests", json={"url": page_server.base + "/article", "email": "a@example.com"}
        )
    ).json()["id"]
    ask = await mailgate.notifier.wait_for(1)
    await client.post(local(ask.decide_url), data={"verdict": "approve"})
    await wait_for_state(client, done_id, "approved")
    page_server.add("/other", "<p>Another page about sea stars and their five arms.</p>")
    pending_id = (
        await client.post(
            "/requests", json={"url": page_server.base + "/other", "email": "b@example.com"}
        )
    ).json()["id"]
    await wait_for_state(client, pending_id, "waiting")
    listed = (await client.get("/requests")).json()["requests"]
    assert [v["id"] for v in listed] == [pending_id, done_id]


async def test_page_gone_on_replay_does_not_fail_an_answered_request(
    start_mailgate, page_server, tmp_path
):
    """A worker that resumes the workflow without the page cache downloads again; if the page is
    gone by then, the checkpointed summaries still carry the request to its decision."""
    data = str(tmp_path / "shared-data")
    first = await start_mailgate(MAILGATE_ENGINE="durable", MAILGATE_DATA_DIR=data)
    body = {"url": page_server.base + "/article", "email": "gina@example.com"}
    request_id = (await first.client.post("/requests", json=body)).json()["id"]
    ask = await first.notifier.wait_for(1)
    await wait_for_state(first.client, request_id, "waiting")
    await first.app.stop()

    page_server.add("/article", "gone", status=404, content_type="text/plain")
    for cached in (tmp_path / "shared-data" / "pages").glob("*"):
        cached.unlink()
    second = await start_mailgate(MAILGATE_ENGINE="durable", MAILGATE_DATA_DIR=data)
    await second.client.post(local(ask.decide_url), data={"verdict": "approve"})
    done = await wait_for_state(second.client, request_id, "approved", "failed")
    assert done["state"] == "approved", done["detail"]
    assert page_server.hits["/article"] == 2
