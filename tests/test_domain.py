"""Identity of requests and the decision value every writer shares."""

from __future__ import annotations

import pytest

from service.domain import REASON_MAX_CHARS, Decision, generation_of, normalize_url, workflow_id


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
    decision = Decision.new("reject", "  too long ", "alice@example.com", "link", 5)
    value = decision.to_value()
    assert value["v"] == 1 and value["reason"] == "too long"
    assert Decision.from_value(value) == decision
    with pytest.raises(ValueError):
        Decision.from_value({**value, "v": 2})
    with pytest.raises(ValueError):
        Decision.from_value({**value, "verdict": "maybe"})


def test_long_reasons_are_capped():
    decision = Decision.new("reject", "x" * 10_000, "a@example.com", "reply", 1)
    assert decision.reason is not None
    assert len(decision.reason) == REASON_MAX_CHARS
    assert decision.reason.endswith("…")
