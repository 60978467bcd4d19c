"""Every role stops within a second of SIGTERM or SIGINT, whatever phase of start-up it is in.

``docker compose stop`` sends SIGTERM and waits ten seconds before SIGKILL; a process that only
listens for the signal once it is fully started would always be killed while it waits for its
engine. The roles run as real subprocesses; the in-process test cuts ``start()`` short at many
points and checks that ``stop()`` leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from dkim_keys import write_key
from processes import Process, clean_env, wait_tcp
from smtp_sink import free_port

from service import config
from service.app import Mailgate, Roles

pytestmark = pytest.mark.slow

STOP_WITHIN_S = 1.0
SPLIT_SECRET = "signals-test-secret-0123456789"


class Silent:
    """A TCP server that accepts connections and never says a word: a hung SMTP server or
    Ollama, which Mailgate's start-up probes wait on until their timeout."""

    def __init__(self) -> None:
        self.accepted = asyncio.Event()
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self._writers.append(writer)
            self.accepted.set()

        self._server = await asyncio.start_server(hold, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for writer in self._writers:
            writer.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


@pytest.fixture
async def silent() -> AsyncIterator[Silent]:
    server = Silent()
    await server.start()
    yield server
    await server.stop()


async def _stops_in_time(process: Process, signum: signal.Signals) -> None:
    assert process.popen is not None and process.popen.poll() is None, process.output()
    sent = time.monotonic()
    process.popen.send_signal(signum)
    try:
        code = await asyncio.to_thread(process.popen.wait, 10)
    finally:
        process.kill()
    took = time.monotonic() - sent
    assert took < STOP_WITHIN_S, f"{process.role} took {took:.2f}s:\n{process.output()[-2000:]}"
    assert code == 0, process.output()[-2000:]
    assert "Traceback" not in process.output()


async def _log_says(process: Process, text: str, timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while text not in process.output():
            if process.popen is not None and process.popen.poll() is not None:
                pytest.fail(f"`mailgate {process.role}` exited:\n{process.output()[-2000:]}")
            await asyncio.sleep(0.05)


def _split_env(tmp_path: Path, engine_port: int, **values: str) -> dict[str, str]:
    return clean_env(
        RESONATE_URL=f"http://127.0.0.1:{engine_port}",
        MAILGATE_SECRET=SPLIT_SECRET,
        MAILGATE_DATA_DIR=str(tmp_path / "data"),
        MAILGATE_ENGINE_PORT=str(engine_port),
        MAILGATE_HTTP_PORT=str(free_port()),
        MAILGATE_INBOUND_PORT=str(free_port()),
        MAILGATE_REPLY_DOMAIN="mailgate.test",
        MAILGATE_SUMMARIZER="extractive",
        MAILGATE_NOTIFIER="console",
        MAILGATE_DKIM_KEY_FILE=str(write_key(tmp_path)),
        **values,
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
@pytest.mark.parametrize("role", ["worker", "gateway", "inbox"])
async def test_a_split_role_waiting_for_its_engine_stops(
    tmp_path: Path, role: str, signum: signal.Signals
):
    process = Process(role, _split_env(tmp_path, free_port()), tmp_path / f"{role}.log")
    process.start()
    await _log_says(process, "waiting for the engine")
    await _stops_in_time(process, signum)


async def test_serve_stops_while_it_probes_a_silent_ollama(tmp_path: Path, silent: Silent):
    env = clean_env(
        MAILGATE_DATA_DIR=str(tmp_path / "data"),
        MAILGATE_HTTP_PORT=str(free_port()),
        MAILGATE_SUMMARIZER="auto",
        OLLAMA_HOST=f"http://127.0.0.1:{silent.port}",
        MAILGATE_NOTIFIER="console",
    )
    process = Process("serve", env, tmp_path / "serve.log")
    process.start()
    async with asyncio.timeout(30):
        await silent.accepted.wait()
    await _stops_in_time(process, signal.SIGINT)


async def test_serve_stops_while_it_probes_a_silent_mail_server(tmp_path: Path, silent: Silent):
    env = clean_env(
        MAILGATE_DATA_DIR=str(tmp_path / "data"),
        MAILGATE_HTTP_PORT=str(free_port()),
        MAILGATE_SUMMARIZER="extractive",
        MAILGATE_NOTIFIER="auto",
        MAILGATE_SMTP_PORT=str(silent.port),
    )
    process = Process("serve", env, tmp_path / "serve.log")
    process.start()
    async with asyncio.timeout(30):
        await silent.accepted.wait()
    await _stops_in_time(process, signal.SIGTERM)


async def test_serve_stops_once_started(tmp_path: Path):
    port = free_port()
    env = clean_env(
        MAILGATE_DATA_DIR=str(tmp_path / "data"),
        MAILGATE_HTTP_PORT=str(port),
        MAILGATE_INBOUND_PORT=str(free_port()),
        MAILGATE_REPLY_DOMAIN="mailgate.test",
        MAILGATE_SUMMARIZER="extractive",
        MAILGATE_NOTIFIER="console",
    )
    process = Process("serve", env, tmp_path / "serve.log")
    process.start()
    await process.wait_http(f"http://127.0.0.1:{port}/healthz")
    await _stops_in_time(process, signal.SIGTERM)


async def test_every_split_role_stops_once_started(tmp_path: Path):
    engine_port = free_port()
    env = _split_env(tmp_path, engine_port)
    engine = Process("engine", env, tmp_path / "engine.log")
    roles = {
        role: Process(
            role, {**env, "MAILGATE_DATA_DIR": str(tmp_path / role)}, tmp_path / f"{role}.log"
        )
        for role in ("worker", "gateway", "inbox")
    }
    engine.start()
    try:
        await wait_tcp(engine_port)
        for process in roles.values():
            process.start()
        await roles["gateway"].wait_http(f"http://127.0.0.1:{env['MAILGATE_HTTP_PORT']}/readyz")
        await wait_tcp(int(env["MAILGATE_INBOUND_PORT"]))
        await _log_says(roles["worker"], "mailgate ready")
        await _stops_in_time(roles["worker"], signal.SIGTERM)
        await _stops_in_time(roles["gateway"], signal.SIGINT)
        await _stops_in_time(roles["inbox"], signal.SIGTERM)
        await _stops_in_time(engine, signal.SIGINT)
    finally:
        for process in (*roles.values(), engine):
            process.kill()


async def test_stop_is_safe_wherever_start_is_cut_short(tmp_path: Path):
    """A durable engine's lock left held, a listener left open or a task left running would
    show here: each cut-short app is stopped, and the next one opens the same data dir."""
    settings = config.load(
        {
            "MAILGATE_DATA_DIR": str(tmp_path / "data"),
            "MAILGATE_HTTP_PORT": "0",
            "MAILGATE_INBOUND_PORT": "0",
            "MAILGATE_REPLY_DOMAIN": "mailgate.test",
            "MAILGATE_SUMMARIZER": "extractive",
            "MAILGATE_NOTIFIER": "console",
        }
    )
    before = asyncio.all_tasks()
    cuts = 0
    steps = 0
    while True:
        app = Mailgate(settings, Roles(worker=True, gateway=True, inbox=True))
        starting = asyncio.create_task(app.start())
        for _ in range(steps):
            await asyncio.sleep(0)
        finished = starting.done()
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starting
        await app.stop()
        assert asyncio.all_tasks() == before
        if finished:
            break
        cuts += 1
        steps = steps + 1 if steps < 10 else int(steps * 1.5)
    assert cuts > 10, "start was cut short at too few points to mean anything"


async def test_stop_is_safe_while_start_waits_for_the_engine(tmp_path: Path):
    settings = config.load(_split_env(tmp_path, free_port()))
    before = asyncio.all_tasks()
    app = Mailgate(settings, Roles(worker=True, gateway=True))
    starting = asyncio.create_task(app.start())
    await asyncio.sleep(0.3)
    assert not starting.done()
    starting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await starting
    await app.stop()
    assert asyncio.all_tasks() == before
