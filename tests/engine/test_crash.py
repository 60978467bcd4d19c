"""SIGKILL at every interesting instant, restart, and every workflow still completes once.

Real processes (``crash_app.py``) and a real ``kill -9``: embedded (engine and workflow in one
process), and split (engine, worker and client as three processes, each killed in turn). Steps
log to a file; a checkpointed step must have completed exactly once ("the LLM was called once").
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

APP = Path(__file__).with_name("crash_app.py")
EXPECTED = {"decision": "approve", "summary": "summary of page 7"}
pytestmark = pytest.mark.slow


class Run:
    """The processes of one scenario and the log they share."""

    def __init__(self, tmp_path: Path) -> None:
        self.data_dir = tmp_path / "data"
        self.log = tmp_path / "events.log"
        self.log.touch()
        self.procs: list[asyncio.subprocess.Process] = []

    async def spawn(self, *args: str) -> asyncio.subprocess.Process:
        env = {**os.environ, "CRASH_LOG": str(self.log)}
        proc = await asyncio.create_subprocess_exec(sys.executable, str(APP), *args, env=env)
        self.procs.append(proc)
        return proc

    def events(self) -> list[str]:
        return [line.split(" ", 1)[1] for line in self.log.read_text().splitlines()]

    def count(self, event: str) -> int:
        return sum(1 for e in self.events() if e.startswith(event))

    async def wait_for(self, event: str, times: int = 1, timeout_s: float = 30) -> None:
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self.count(event) < times:
            if asyncio.get_running_loop().time() > deadline:
                msg = f"never saw {event!r} x{times}; log: {self.events()}"
                raise AssertionError(msg)
            await asyncio.sleep(0.01)

    async def kill(self, proc: asyncio.subprocess.Process) -> None:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()

    def result(self) -> dict[str, str]:
        """The workflow's result: every process that saw it saw the same one."""
        results = {e.removeprefix("result ") for e in self.events() if e.startswith("result ")}
        assert len(results) == 1, self.events()
        return json.loads(results.pop())

    async def close(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


@pytest.fixture
async def run(tmp_path: Path) -> AsyncIterator[Run]:
    scenario = Run(tmp_path)
    yield scenario
    await scenario.close()


@pytest.mark.parametrize(
    ("kill_at", "settle_s", "first_decides", "summaries"),
    [
        ("fetch start", 0.0, False, {1}),
        ("summarize start", 0.0, False, {1}),
        # the step has returned, its checkpoint may not be committed yet: a re-run is allowed
        ("summarize done", 0.0, False, {1, 2}),
        ("ask", 0.0, False, {1}),
        ("ask", 0.5, False, {1}),
        ("decided", 0.0, True, {1}),
    ],
    ids=["mid-fetch", "fetch-checkpointed", "summary-done", "after-ask", "waiting", "decided"],
)
async def test_embedded_engine_survives_sigkill(
    run: Run, kill_at: str, settle_s: float, first_decides: bool, summaries: set[int]
) -> None:
    first = await run.spawn("embedded", str(run.data_dir), *(["--decide"] if first_decides else []))
    await run.wait_for(kill_at)
    await asyncio.sleep(settle_s)
    await run.kill(first)

    second = await run.spawn(
        "embedded", str(run.data_dir), *([] if first_decides else ["--decide"])
    )
    await run.wait_for("result", timeout_s=30)
    assert await asyncio.wait_for(second.wait(), 30) == 0

    assert run.result() == EXPECTED
    assert run.count("fetch done") == 1
    assert run.count("summarize done") in summaries
    assert run.count("decided") == 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_split_processes_survive_killing_each_one(run: Run) -> None:
    """Engine, worker and client as processes: kill the engine while the worker summarizes,
    then the client while the workflow waits on the human; it completes, summarizing once."""
    port = str(free_port())
    url = f"http://127.0.0.1:{port}"
    engine = await run.spawn("engine", str(run.data_dir), port)
    await run.wait_for("engine started")
    await run.spawn("worker", url)
    await run.wait_for("worker started")
    client = await run.spawn("client", url)

    await run.wait_for("summarize start")
    await run.kill(engine)
    await run.spawn("engine", str(run.data_dir), port)
    await run.wait_for("ask")

    await run.kill(client)
    await run.spawn("client", url, "--decide")
    await run.wait_for("result", timeout_s=45)

    assert run.result() == EXPECTED
    assert run.count("fetch done") == 1
    assert run.count("summarize done") == 1


async def test_killed_worker_mid_step_is_replaced(run: Run) -> None:
    port = str(free_port())
    url = f"http://127.0.0.1:{port}"
    await run.spawn("engine", str(run.data_dir), port)
    await run.wait_for("engine started")
    first_worker = await run.spawn("worker", url)
    await run.wait_for("worker started")
    await run.spawn("client", url, "--decide")
    await run.wait_for("summarize start")
    await run.kill(first_worker)

    await run.spawn("worker", url)
    await run.wait_for("result", timeout_s=45)

    assert run.result() == EXPECTED
    assert run.count("fetch done") == 1
    assert run.count("summarize start") == 2
    assert run.count("summarize done") == 1
