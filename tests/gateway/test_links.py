"""Decision links over real HTTP: only the right, fresh, untouched token decides, and only once."""

from __future__ import annotations

from support import PageServer, local, wait_for_state

from service import tokens

JSON = {"accept": "application/json"}


async def _waiting_round(mailgate, page_server: PageServer, approver: str = "alice@example.com"):
    body = {"url": page_server.base + "/article", "email": approver}
    request_id = (await mailgate.client.post("/requests", json=body)).json()["id"]
    ask = await mailgate.notifier.wait_for(len(mailgate.notifier.asks) + 1)
    await wait_for_state(mailgate.client, request_id, "waiting")
    return request_id, ask


async def _state(mailgate, request_id: str) -> str:
    return (await mailgate.client.get(f"/requests/{request_id}")).json()["state"]


async def test_get_never_decides_and_preselects(start_mailgate, page_server):
    mailgate = await start_mailgate()
    request_id, ask = await _waiting_round(mailgate, page_server)
    for _ in range(3):
        page = await mailgate.client.get(local(ask.decide_url) + "?verdict=reject")
        assert page.status_code == 200
        assert 'class="reject selected"' in page.text
    assert await _state(mailgate, request_id) == "waiting"


async def test_forged_and_altered_tokens_change_nothing(start_mailgate, page_server):
    mailgate = await start_mailgate()
    request_id, ask = await _waiting_round(mailgate, page_server)
    token = local(ask.decide_url).rsplit("/", 1)[1]
    forged = tokens.mint(
        ask.promise_id, ask.approver, secrets=("guessed",), now_ms=ask.expires_at - 1000
    )
    altered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
    for bad in (forged, altered, "garbage"):
        page = await mailgate.client.post(f"/decide/{bad}", data={"verdict": "approve"})
        assert page.status_code == 403
        assert "not valid" in page.text
        api = await mailgate.client.post(
            f"/decide/{bad}", json={"verdict": "approve"}, headers=JSON
        )
        assert api.status_code == 403
    assert await _state(mailgate, request_id) == "waiting"


async def test_token_for_another_approver_is_refused(start_mailgate, page_server):
    mailgate = await start_mailgate()
    request_id, ask = await _waiting_round(mailgate, page_server)
    theirs = tokens.mint(
        ask.promise_id,
        "mallory@example.com",
        secrets=("test-secret",),
        now_ms=ask.expires_at - 7 * 86400 * 1000,
    )
    response = await mailgate.client.post(
        f"/decide/{theirs}", json={"verdict": "approve"}, headers=JSON
    )
    assert response.status_code == 403
    assert "someone else" in response.json()["error"]
    assert await _state(mailgate, request_id) == "waiting"


async def test_a_link_decides_as_long_as_its_round_waits(start_mailgate, page_server):
    """Release 0.1 let links die after MAILGATE_DECISION_TTL while their round lived on; now a
    link signed eight days ago still decides a round that waits (its deadline is 30 days)."""
    mailgate = await start_mailgate(MAILGATE_DECISION_TTL="30d")
    request_id, ask = await _waiting_round(mailgate, page_server)
    assert ask.expires_at is not None
    eight_days_ago = ask.expires_at - 30 * 86_400_000 - 8 * 86_400_000
    old = tokens.mint(ask.promise_id, ask.approver, secrets=("test-secret",), now_ms=eight_days_ago)
    page = await mailgate.client.post(f"/decide/{old}", data={"verdict": "approve"})
    assert page.status_code == 200, page.text
    await wait_for_state(mailgate.client, request_id, "approved")


async def test_replayed_token_is_already_decided(start_mailgate, page_server):
    mailgate = await start_mailgate()
    request_id, ask = await _waiting_round(mailgate, page_server)
    first = await mailgate.client.post(local(ask.decide_url), data={"verdict": "approve"})
    assert first.status_code == 200
    replay = await mailgate.client.post(
        local(ask.decide_url), data={"verdict": "reject", "reason": "x"}
    )
    assert replay.status_code == 409
    assert "Already decided" in replay.text and "approved" in replay.text
    page = await mailgate.client.get(local(ask.decide_url))
    assert "Already decided" in page.text
    done = await wait_for_state(mailgate.client, request_id, "approved")
    assert len(done["rounds"]) == 1


async def test_api_token_guards_everything_but_decide(start_mailgate, page_server):
    mailgate = await start_mailgate(MAILGATE_API_TOKEN="sesame")
    client = mailgate.client
    body = {"url": page_server.base + "/article", "email": "dan@example.com"}
    assert (await client.post("/requests", json=body)).status_code == 401
    assert (await client.get("/requests")).status_code == 401
    dashboard = await client.get("/", follow_redirects=False)
    assert dashboard.status_code == 303 and dashboard.headers["location"].endswith("/login")

    bearer = {"authorization": "Bearer sesame"}
    submitted = await client.post("/requests", json=body, headers=bearer)
    assert submitted.status_code == 202
    ask = await mailgate.notifier.wait_for(1)
    assert (await client.get(local(ask.decide_url))).status_code == 200

    wrong = await client.post("/login", data={"token": "nope"})
    assert wrong.status_code == 401
    login = await client.post("/login", data={"token": "sesame"}, follow_redirects=False)
    assert login.status_code == 303
    cookie = login.headers["set-cookie"]
    assert "HttpOnly" in cookie and "sesame" not in cookie
    listed = await client.get("/")
    assert listed.status_code == 200 and "dan@example.com" in listed.text


async def test_api_refuses_forms_and_cross_site_requests(start_mailgate, page_server):
    mailgate = await start_mailgate()
    client = mailgate.client
    body = {"url": page_server.base + "/article", "email": "hal@example.com"}
    form = await client.post("/requests", data=body)
    assert form.status_code == 415
    cross = await client.post("/requests", json=body, headers={"sec-fetch-site": "cross-site"})
    assert cross.status_code == 403
    foreign = await client.post("/requests", json=body, headers={"origin": "http://evil.example"})
    assert foreign.status_code == 403
    request_id = (await client.post("/requests", json=body)).json()["id"]
    await mailgate.notifier.wait_for(1)
    forged = await client.post(
        f"/requests/{request_id}/decision", data={"verdict": "approve", "by": "evil"}
    )
    assert forged.status_code == 415
    assert (await client.get(f"/requests/{request_id}")).json()["state"] == "waiting"
