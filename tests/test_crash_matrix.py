"""The crash matrix (``tests/crash_matrix.py``): in each topology, SIGKILL the process doing the
work at each kill point of a request and restart it; every request completes exactly once, with
one LLM call per round, one email per round (or its resend, same Message-ID), every decision
recorded once and an intact audit chain. ``bench/matrix.py`` prints the same runs as a table."""

from __future__ import annotations

from pathlib import Path

import crash_matrix
import pytest

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("topology", crash_matrix.TOPOLOGIES)
async def test_every_kill_point(
    topology: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    database = request.getfixturevalue("postgres_url") if topology == "postgres" else None
    async with crash_matrix.world() as world:
        outcomes = await crash_matrix.run_topology(topology, world, tmp_path, database)
    report = crash_matrix.table(outcomes)
    print(report)
    assert all(o.ok for o in outcomes), report
