"""Mailgate as real subprocesses, for crash tests: start, wait until ready, SIGKILL, restart."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]


def clean_env(**values: str) -> dict[str, str]:
    """The parent's environment without Mailgate/Resonate settings, plus ``values``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MAILGATE_", "RESONATE_", "OLLAMA_"))
    }
    env.update(values)
    return env


def serve_env(tmp_path: Path, port: int, **values: str) -> dict[str, str]:
    """A clean environment for `mailgate serve` on ``port`` with its data under ``tmp_path``;
    it may fetch private URLs, since the test's pages are on loopback."""
    return clean_env(
        MAILGATE_DATA_DIR=str(tmp_path / "data"),
        MAILGATE_HTTP_PORT=str(port),
        MAILGATE_ALLOW_PRIVATE_URLS="1",
        **values,
    )


class Process:
    """One ``python -m service <role>``; its output goes to a log file kept for failures."""

    def __init__(
        self,
        role: str,
        env: dict[str, str],
        log: Path,
        *,
        mailgate: tuple[str, ...] = (sys.executable, "-m", "service"),
        cwd: Path = ROOT,
    ) -> None:
        self.role = role
        self.env = env
        self.log = log
        self.mailgate = mailgate
        self.cwd = cwd
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        with self.log.open("ab") as out:
            out.write(f"\n==== start {self.starts} of `mailgate {self.role}`\n".encode())
            self.popen = subprocess.Popen(
                [*self.mailgate, self.role],
                cwd=self.cwd,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def kill(self) -> None:
        """SIGKILL: no cleanup, no flush, exactly like a crash."""
        if self.popen is not None and self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)

    def terminate(self, timeout: float = 20) -> int | None:
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.popen.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    async def wait_http(self, url: str, timeout: float = 30) -> None:
        async with httpx.AsyncClient(timeout=2) as client, asyncio.timeout(timeout):
            while True:
                if self.popen is not None and self.popen.poll() is not None:
                    msg = f"`mailgate {self.role}` exited:\n{self.output()[-3000:]}"
                    raise RuntimeError(msg)
                try:
                    if (await client.get(url)).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)


async def wait_tcp(port: int, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while True:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.1)
                continue
            writer.close()
            await writer.wait_closed()
            return
