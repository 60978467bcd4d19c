"""Guessing over real HTTP: brute-forced decision links and stuffed credentials decide nothing,
and each client address is slowed to its limit with 429 and Retry-After; the session cookie
carries HttpOnly, SameSite and, behind TLS, Secure."""

from __future__ import annotations

import asyncio
import random
import string
import time

import pytest
from starlette.requests import Request
from support import PageServer, local, wait_for_state

from service.durations import Rate
from service.gateway.throttle import Buckets, client_key

ATTACKER = {"x-forwarded-for": "198.51.100.7"}
APPROVER = {"x-forwarded-for": "203.0.113.20"}
OPERATOR = {"x-forwarded-for": "203.0.113.30"}
TOKEN = "operator-token-0123456789"


async def _waiting_round(mailgate, page_server: PageServer, headers: dict[str, str] | None = None):
    body = {"url": page_server.base + "/article", "email": "alice@example.com"}
    request_id = (await mailgate.client.post("/requests", json=body, headers=headers)).json()["id"]
    ask = await mailgate.notifier.wait_for(len(mailgate.notifier.asks) + 1)
    await wait_for_state(mailgate.client, request_id, "waiting", headers=headers)
    return request_id, local(ask.decide_url)


def _near_misses(link: str, count: int) -> list[str]:
    """Tokens one to three characters away from the real one, then random ones of its size."""
    token = link.rsplit("/", 1)[1]
    alphabet = string.ascii_letters + string.digits + "-_."
    rng = random.Random(15)
    guesses: set[str] = set()
    while len(guesses) < count:
        chars = list(token)
        if len(guesses) < count // 2:
            for _ in range(rng.randint(1, 3)):
                chars[rng.randrange(len(chars))] = rng.choice(alphabet)
        else:
            chars = [rng.choice(alphabet) for _ in chars]
        guess = "".join(chars)
        if guess != token:
            guesses.add(guess)
    return sorted(guesses)


@pytest.mark.slow
async def test_ten_thousand_guessed_links_decide_nothing(start_mailgate, page_server):
    mailgate = await start_mailgate()
    request_id, link = await _waiting_round(mailgate, page_server)
    answers: dict[int, int] = {}
    retry_after: set[str] = set()
    started = time.perf_counter()
    for guess in _near_misses(link, 10_000):
        answer = await mailgate.client.post(
            f"/decide/{guess}", json={"verdict": "approve"}, headers=ATTACKER
        )
        answers[answer.status_code] = answers.get(answer.status_code, 0) + 1
        if answer.status_code == 429:
            retry_after.add(answer.headers["retry-after"])
    elapsed = time.perf_counter() - started
    # MAILGATE_LINK_FAILURES=20/1m: 20 guesses are looked at, then one more every 3 s.
    assert answers[403] <= 20 + elapsed / 3 + 1
    assert answers[429] == 10_000 - answers[403]
    assert set(answers) == {403, 429}
    assert all(1 <= int(seconds) <= 3 for seconds in retry_after)
    print(f"10,000 guesses in {elapsed:.1f} s: {answers}")

    status = (await mailgate.client.get(f"/requests/{request_id}")).json()
    assert status["state"] == "waiting"
    events = (await mailgate.client.get(f"/requests/{request_id}/events")).json()["events"]
    assert [e["kind"] for e in events if e["kind"] in ("decided", "refused")] == []

    still = await mailgate.client.post(link, json={"verdict": "approve"}, headers=ATTACKER)
    assert still.status_code == 429, "the limit holds for the address, whatever it sends"
    decided = await mailgate.client.post(link, json={"verdict": "approve"}, headers=APPROVER)
    assert decided.status_code == 200
    assert decided.json()["accepted"] is True
    await wait_for_state(mailgate.client, request_id, "approved")


async def test_concurrent_guessing_overshoots_by_at_most_the_requests_in_flight(
    start_mailgate, page_server
):
    mailgate = await start_mailgate()
    request_id, link = await _waiting_round(mailgate, page_server)
    guesses = _near_misses(link, 400)
    in_flight = 16
    lanes = asyncio.Semaphore(in_flight)

    async def guess(token: str) -> int:
        async with lanes:
            answer = await mailgate.client.post(
                f"/decide/{token}", data={"verdict": "approve"}, headers=ATTACKER
            )
            return answer.status_code

    codes = await asyncio.gather(*(guess(token) for token in guesses))
    assert 20 <= codes.count(403) <= 20 + in_flight
    assert codes.count(429) == len(guesses) - codes.count(403)
    assert (await mailgate.client.get(f"/requests/{request_id}")).json()["state"] == "waiting"


async def test_the_bucket_refills_and_retry_after_says_when(start_mailgate):
    mailgate = await start_mailgate(MAILGATE_LINK_FAILURES="2/2s")
    for _ in range(2):
        assert (await mailgate.client.get("/decide/nope", headers=ATTACKER)).status_code == 403
    refused = await mailgate.client.get("/decide/nope", headers=ATTACKER)
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert "try again in 1 s" in refused.text
    waited = time.perf_counter()
    async with asyncio.timeout(5):
        while (await mailgate.client.get("/decide/nope", headers=ATTACKER)).status_code == 429:
            await asyncio.sleep(0.05)
    assert 0.8 <= time.perf_counter() - waited <= 2.5


async def test_forwarded_for_counts_only_from_a_trusted_proxy(start_mailgate):
    """With no trusted proxy, X-Forwarded-For is the client's own words: rotating it changes
    nothing, every guess counts against the address the connection came from."""
    mailgate = await start_mailgate(MAILGATE_TRUSTED_PROXIES="", MAILGATE_LINK_FAILURES="5/1m")
    codes = [
        (
            await mailgate.client.get("/decide/x", headers={"x-forwarded-for": f"10.0.0.{n}"})
        ).status_code
        for n in range(8)
    ]
    assert codes == [403] * 5 + [429] * 3


async def test_credential_stuffing_is_slowed_per_address(start_mailgate, page_server):
    mailgate = await start_mailgate(MAILGATE_API_TOKEN=TOKEN)
    stuffed = [f"leaked-{n:04d}" for n in range(300)]
    codes = [
        (await mailgate.client.post("/login", data={"token": t}, headers=ATTACKER)).status_code
        for t in stuffed
    ]
    assert codes == [401] * 10 + [429] * 290
    refused = await mailgate.client.post("/login", data={"token": TOKEN}, headers=ATTACKER)
    assert refused.status_code == 429, "the right token too, from that address, until it refills"
    assert 1 <= int(refused.headers["retry-after"]) <= 90
    assert "Too many attempts" in refused.text
    bearer = {**ATTACKER, "authorization": f"Bearer {TOKEN}"}
    assert (await mailgate.client.get("/requests", headers=bearer)).status_code == 429
    wrong_bearer = {**OPERATOR, "authorization": "Bearer leaked-9999"}
    for _ in range(10):
        assert (await mailgate.client.get("/requests", headers=wrong_bearer)).status_code == 401
    assert (await mailgate.client.get("/requests", headers=wrong_bearer)).status_code == 429
    assert (await mailgate.client.get("/requests", headers=ATTACKER)).status_code == 401, (
        "a call with no credentials guesses nothing and costs nothing"
    )

    signed_in = await mailgate.client.post(
        "/login", data={"token": TOKEN}, headers={"x-forwarded-for": "192.0.2.55"}
    )
    assert signed_in.status_code == 303
    cookie = signed_in.headers["set-cookie"]
    assert "httponly" in cookie.lower()
    assert "samesite=strict" in cookie.lower()
    assert "secure" not in cookie.lower(), "MAILGATE_PUBLIC_URL is http and so was the request"


async def test_valid_calls_never_meet_the_limit(start_mailgate, page_server):
    mailgate = await start_mailgate(MAILGATE_API_TOKEN=TOKEN, MAILGATE_CREDENTIAL_FAILURES="1/1h")
    auth = {"authorization": f"Bearer {TOKEN}"}
    request_id, link = await _waiting_round(mailgate, page_server, headers=auth)
    answers = await asyncio.gather(
        *(mailgate.client.get(f"/requests/{request_id}", headers=auth) for _ in range(50)),
        *(mailgate.client.get(link) for _ in range(50)),
    )
    assert {answer.status_code for answer in answers} == {200}


@pytest.mark.parametrize(
    ("public_url", "headers", "trusted", "secure"),
    [
        ("https://mailgate.example.com", {}, "127.0.0.1", True),
        ("http://localhost:9000", {"x-forwarded-proto": "https"}, "127.0.0.1", True),
        ("http://localhost:9000", {"x-forwarded-proto": "https"}, "", False),
        ("http://localhost:9000", {}, "127.0.0.1", False),
    ],
    ids=["https-public-url", "tls-at-trusted-proxy", "untrusted-forwarded-proto", "plain-http"],
)
async def test_the_session_cookie_is_secure_behind_tls(
    start_mailgate, public_url, headers, trusted, secure
):
    mailgate = await start_mailgate(
        MAILGATE_API_TOKEN=TOKEN, MAILGATE_PUBLIC_URL=public_url, MAILGATE_TRUSTED_PROXIES=trusted
    )
    signed_in = await mailgate.client.post("/login", data={"token": TOKEN}, headers=headers)
    assert signed_in.status_code == 303
    flags = [part.strip().lower() for part in signed_in.headers["set-cookie"].split(";")]
    assert ("secure" in flags) is secure
    assert "httponly" in flags
    assert "samesite=strict" in flags


def test_a_bucket_refills_evenly_and_forgets_full_ones():
    buckets = Buckets(Rate(4, 60), max_keys=2)
    assert [buckets.spend("a", 0) for _ in range(4)] == [3, 2, 1, 0]
    assert buckets.wait("a", 0) == pytest.approx(15)
    assert buckets.wait("a", 10) == pytest.approx(5)
    assert buckets.wait("a", 15) == 0
    assert buckets.spend("a", 15) == 0
    buckets.spend("b", 16)
    buckets.spend("c", 17)
    assert buckets.wait("a", 17) == 0, "the least recently seen was forgotten, as a full bucket"
    assert buckets.wait("b", 17) == 0
    assert buckets.spend("c", 17 + 60) == 3


@pytest.mark.parametrize(
    ("peer", "key"),
    [
        ("198.51.100.7", "198.51.100.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:ffff::9", "2001:db8:1:2::/64"),
        ("::ffff:192.0.2.1", "192.0.2.1"),
        ("testclient", "testclient"),
    ],
)
def test_clients_are_counted_per_address_and_ipv6_per_64(peer, key):
    request = Request({"type": "http", "client": (peer, 1234), "headers": []})
    assert client_key(request) == key
