"""Two processes append to one request's trail at once, through `mailgate engine`."""

from __future__ import annotations

import asyncio
import itertools
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from processes import Process, clean_env, wait_tcp
from resonate.resonate import Resonate
from smtp_sink import free_port

from service.domain import Request, workflow_id
from service.ledger import Ledger

from .conftest import SECRETS, Clock

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).with_name("append_events.py")
EACH = 100


async def test_two_processes_write_one_unbroken_chain(tmp_path: Path) -> None:
    port = free_port()
    engine = Process(
        "engine",
        clean_env(MAILGATE_DATA_DIR=str(tmp_path / "data"), MAILGATE_ENGINE_PORT=str(port)),
        tmp_path / "engine.log",
    )
    engine.start()
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_tcp(port)
        resonate = Resonate(url=url, group="test", pid="test", env={}, sources=[])
        ledger = Ledger(resonate, secrets=SECRETS, clock=Clock())
        request = Request("https://example.com/race", ("alice@example.com",), None, 1, "local")
        request_id = workflow_id(request.url, request.approver)
        await ledger.start(request_id, request, timeout=timedelta(hours=1), version=2)
        appenders = [
            await asyncio.create_subprocess_exec(
                sys.executable, str(SCRIPT), url, request_id, side, str(EACH), SECRETS[0]
            )
            for side in ("left", "right")
        ]
        assert [await p.wait() for p in appenders] == [0, 0]
        events = (await ledger.chain(request_id)).events
        verification = await ledger.verify(request_id)
        await resonate.stop()
    finally:
        engine.terminate()
    assert [e.seq for e in events] == list(range(1, 2 * EACH + 2))
    assert all(e.prev == p.hash for p, e in itertools.pairwise(events))
    by_side = {
        side: [e.data["n"] for e in events if e.data.get("side") == side]
        for side in ("left", "right")
    }
    assert by_side == {"left": list(range(EACH)), "right": list(range(EACH))}
    sides = [e.data["side"] for e in events if "side" in e.data]
    assert sum(a != b for a, b in itertools.pairwise(sides)) > 1, "no overlap"
    assert verification is not None and verification.verdict == "intact"
