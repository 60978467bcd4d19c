"""scripts/try as a newcomer runs it: the decision link is printed before the line that points
at it, and Ctrl-C stops everything it started."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

import pytest
from processes import ROOT, clean_env
from smtp_sink import free_port

pytestmark = pytest.mark.slow


async def test_try_points_up_at_a_link_that_is_there_and_stops_on_ctrl_c(tmp_path: Path):
    port = free_port()
    env = clean_env(
        MAILGATE_HTTP_PORT=str(port),
        MAILGATE_INBOUND_PORT=str(free_port()),
        MAILGATE_DATA_DIR=str(tmp_path / "data"),
        MAILGATE_SUMMARIZER="extractive",
        MAILGATE_NOTIFIER="console",
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "scripts" / "try.py"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    assert process.stdout is not None
    shown = ""
    try:
        async with asyncio.timeout(90):
            while "Ctrl-C stops Mailgate" not in shown:
                line = await process.stdout.readline()
                assert line, f"scripts/try ended early:\n{shown}"
                shown += line.decode()
        assert "printed just above" in shown
        assert shown.index("/decide/") < shown.index("printed just above"), shown
        assert f"http://127.0.0.1:{port}/dashboard/mg-" in shown

        os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        rest = ""
        try:
            async with asyncio.timeout(20):
                while chunk := await process.stdout.read(4096):
                    rest += chunk.decode(errors="replace")
                await process.wait()
        except TimeoutError:
            ps = await asyncio.create_subprocess_exec(
                "ps",
                "-o",
                "pid,ppid,stat,etime,blocked,ignored,caught,args",
                "-s",
                str(process.pid),
                stdout=asyncio.subprocess.PIPE,
            )
            tree = (await ps.communicate())[0].decode()
            pytest.fail(f"scripts/try did not stop in 20 s; its processes:\n{tree}\n{rest}")
        assert process.returncode == 0, rest
        assert "shutting down" in rest
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
