"""A write that cannot reach the disk fails the request retryably and leaves nothing behind."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from resonate_base.error import ConnectorError

from service.engine import EngineUnavailable, open_durable

APP = Path(__file__).with_name("disk_full_app.py")


def test_engine_unavailable_is_a_connector_error() -> None:
    assert issubclass(EngineUnavailable, ConnectorError)


@pytest.mark.slow
async def test_disk_full_fails_the_request_and_no_partial_state_survives(
    tmp_path: Path, request_engine
) -> None:
    seed = open_durable(tmp_path, pid="seed", group="g")
    await seed.start()
    await request_engine(seed, "promise.create", id="before", timeoutAt=1 << 62, tags={})
    await seed.stop()

    filler = await asyncio.create_subprocess_exec(
        sys.executable, str(APP), str(tmp_path), "150000", stdout=asyncio.subprocess.PIPE
    )
    stdout, _ = await asyncio.wait_for(filler.communicate(), 60)
    assert filler.returncode == 0
    report = json.loads(stdout.decode().strip().splitlines()[-1])
    assert report["acked"] > 0
    assert "connector error" in report["error"]
    assert report["after"] == 404

    again = open_durable(tmp_path, pid="seed", group="g")
    await again.start()
    status, _ = await request_engine(again, "promise.get", id="before")
    assert status == 200
    for i in range(report["acked"]):
        status, _ = await request_engine(again, "promise.get", id=f"p{i}")
        assert status == 200
    status, _ = await request_engine(again, "promise.get", id=report["failed"])
    assert status == 404
    status, _ = await request_engine(again, "promise.create", id="after", timeoutAt=1 << 62)
    assert status == 201
    await again.stop()
