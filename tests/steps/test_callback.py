"""Outcome callbacks against a real receiver on loopback, with the sleeps between tries recorded."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from smtp_sink import free_port
from support import CallbackSink, Sleeps, jittered

from service import retry
from service.errors import Permanent
from service.steps.callback import CallbackFailed, CallbackSender, signature

SECRETS = ("old-secret-0123456789", "new-secret-0123456789")
OUTCOME = {"id": "mg-0123456789abcdef0123", "state": "approved"}


def sender(sleeps: Sleeps, **options: object) -> CallbackSender:
    settings: dict[str, object] = {
        "secrets": SECRETS,
        "timeout_s": 5.0,
        "allow_private": True,
        "sleep": sleeps,
    }
    return CallbackSender(**(settings | options))  # type: ignore[arg-type]


async def test_delivered_signed_with_the_newest_secret(
    callback_sink: CallbackSink,
) -> None:
    sleeps = Sleeps()

    await sender(sleeps).deliver(callback_sink.url, OUTCOME)

    [(headers, raw)] = callback_sink.received
    assert json.loads(raw) == OUTCOME
    assert headers["x-mailgate-signature"] == signature(raw, SECRETS[-1])
    assert sleeps == []


async def test_a_failing_receiver_is_tried_again_with_jittered_backoff(
    callback_sink: CallbackSink,
) -> None:
    callback_sink.fail_first = 3
    sleeps = Sleeps()

    await sender(sleeps).deliver(callback_sink.url, OUTCOME)

    assert callback_sink.attempts == 4
    assert len(callback_sink.received) == 1
    assert jittered(sleeps, [1.0, 2.0, 4.0], jitter_s=retry.CALLBACK.first_s)


async def test_gives_up_after_the_attempt_budget_with_the_last_cause(
    callback_sink: CallbackSink,
) -> None:
    callback_sink.fail_first = 10
    sleeps = Sleeps()
    policy = replace(retry.CALLBACK, attempts=3)

    with pytest.raises(CallbackFailed, match=r"failed 3 times: HTTP 500") as caught:
        await sender(sleeps, policy=policy).deliver(callback_sink.url, OUTCOME)

    assert isinstance(caught.value, Permanent)
    assert callback_sink.attempts == 3
    assert len(sleeps) == 2


async def test_a_receiver_that_is_not_listening_is_tried_again() -> None:
    sleeps = Sleeps()
    policy = replace(retry.CALLBACK, attempts=2)
    url = f"http://127.0.0.1:{free_port()}/hook"

    with pytest.raises(CallbackFailed, match="failed 2 times: ConnectError"):
        await sender(sleeps, policy=policy).deliver(url, OUTCOME)

    assert len(sleeps) == 1


async def test_a_refused_url_fails_at_once(callback_sink: CallbackSink) -> None:
    sleeps = Sleeps()

    with pytest.raises(CallbackFailed, match="callback URL refused"):
        await sender(sleeps, allow_private=False).deliver(callback_sink.url, OUTCOME)

    assert callback_sink.attempts == 0
    assert sleeps == []
