"""Load: many requests waiting at once on `mailgate serve`, then decided by link POSTs and SMTP
replies from 20 concurrent clients (a tenth rejected first and approved in a second round).

The run is ``bench/load.py``'s, with fewer requests than the bench's 1,000 so that it stays
well inside CI's time on two shared cores; every request is checked there: approved, exactly one
``finished`` and one ``decided`` per round in its trail, its outcome callback received, and a
sample's audit chain intact.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import load

pytestmark = pytest.mark.slow

REQUESTS = 300
CLIENTS = 20


async def test_requests_waiting_at_once_are_each_decided_once_and_none_lost(
    tmp_path: Path,
) -> None:
    result = await load.run(REQUESTS, CLIENTS, reject_every=10, sample=50, data=tmp_path)

    assert result.problems == []
    assert len(result.latencies_ms) == REQUESTS
    assert result.decisions == REQUESTS + REQUESTS // 10
    assert result.channels["reply, approve"] > REQUESTS // 3
    assert result.channels["link, approve"] > REQUESTS // 3
    assert result.channels["link, reject"] == REQUESTS // 10
