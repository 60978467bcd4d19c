"""Identity of requests and the decision value every writer shares."""

from __future__ import annotations

import pytest

from service.domain import (
    REASON_MAX_CHARS,
    Deadline,
    Decision,
    Request,
    Seal,
    generation_of,
    normalize_url,
    workflow_id,
)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("HTTP://Example.COM/a?b=1", "http://example.com/a?b=1"),
        ("https://example.com:443/x#frag", "https://example.com/x"),
        ("http://example.com", "http://example.com/"),
    ],
)
def test_same_page_same_url(a: str, b: str):
    assert normalize_url(a) == normalize_url(b)


def test_workflow_id_is_per_pair_and_free_of_colons():
    one = workflow_id("https://example.com/", "Alice@Example.com")
    assert one == workflow_id("https://EXAMPLE.com", "alice@example.com")
    assert one != workflow_id("https://example.com/", "bob@example.com")
    assert ":" not in one and one.startswith("mg-")
    assert generation_of(one) == 1
    assert generation_of(workflow_id("https://example.com/", "a@example.com", 3)) == 3


def test_decision_round_trip_and_version_check():
    decision = Decision.new(
        "reject", "  too long ", "alice@example.com", "link", 5, {"address": "10.0.0.1"}
    ).sealed(Seal(3, "ab" * 32))
    value = decision.to_value()
    assert value["v"] == 3 and value["reason"] == "too long"
    assert value["seal"] == {"count": 3, "hash": "ab" * 32}
    assert Decision.from_value(value) == decision
    with pytest.raises(ValueError):
        Decision.from_value({**value, "v": 4})
    with pytest.raises(ValueError):
        Decision.from_value({**value, "verdict": "maybe"})


def test_release_0_1_decisions_still_read():
    old = {
        "v": 1,
        "verdict": "approve",
        "reason": None,
        "by": "a@example.com",
        "via": "cli",
        "at": 7,
        "nonce": "n",
    }
    decision = Decision.from_value(old)
    assert (decision.verdict, decision.via, decision.evidence, decision.seal) == (
        "approve",
        "cli",
        {},
        None,
    )


def test_release_0_1_requests_still_read():
    old = {
        "url": "https://example.com/",
        "approver": "A@Example.com",
        "callback_url": None,
        "submitted_at": 9,
    }
    request = Request.from_value(old)
    assert (request.schema, request.approver, request.submitted_by) == (
        1,
        "a@example.com",
        "unknown",
    )
    assert Request.from_value(request.to_value()) == request
    with pytest.raises(ValueError, match="newer than this release"):
        Request.from_value({**old, "schema": 99})


def test_long_reasons_are_capped():
    decision = Decision.new("reject", "x" * 10_000, "a@example.com", "reply", 1)
    assert decision.reason is not None
    assert len(decision.reason) == REASON_MAX_CHARS
    assert decision.reason.endswith("…")


def test_a_deadline_reminds_after_then_every_until_the_deadline():
    plan = Deadline(expires_in_ms=10_000, remind_after_ms=3_000, remind_every_ms=3_000)
    assert plan.reminders(100) == [3_100, 6_100, 9_100]
    assert Deadline(10_000, 3_000, 0).reminders(0) == [3_000], "0: remind once"
    assert Deadline(10_000, 0, 3_000).reminders(0) == [], "0: reminders off"
    assert Deadline(2_000, 3_000, 1_000).reminders(0) == [], "never at or after the deadline"
    assert Deadline.from_value(plan.to_value()) == plan


def test_only_a_persons_no_asks_again():
    def ending(verdict: str, via: str) -> bool:
        return Decision.new(verdict, None, "x", via, 1).ends_request  # type: ignore[arg-type]

    assert not ending("reject", "link")
    assert ending("reject", "expiry") and ending("approve", "link") and ending("cancel", "api")
    assert ending("expire", "expiry")
