"""Five hundred SMTP sessions at once: all are served, each answered the right code, the round
decided once; past the listener's limits (500 in all, 50 per address) a session is told 421
before its greeting, and the listener goes on."""

from __future__ import annotations

import asyncio
import resource
import time

import pytest
from replying import ALICE, Wire, waiting_for_alice
from support import wait_for_state

SESSIONS = 500
PER_ADDRESS = 50
#: Loopback is all of 127.0.0.0/8 on Linux: ten source addresses, fifty sessions each.
SOURCES = [f"127.0.0.{n}" for n in range(1, SESSIONS // PER_ADDRESS + 1)]


def _enough_descriptors() -> None:
    """Both ends of every session live in this process: two descriptors each, and some."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4 * SESSIONS
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


@pytest.mark.slow
async def test_five_hundred_sessions_at_once(start_listener, page_server):
    _enough_descriptors()
    waiting = await waiting_for_alice(start_listener, page_server)
    inbox = waiting.mailgate.app.inbox
    assert inbox is not None
    started = time.perf_counter()
    wires = await asyncio.gather(
        *(Wire.open(waiting.port, source=SOURCES[n % len(SOURCES)]) for n in range(SESSIONS))
    )
    await asyncio.gather(*(wire.hello() for wire in wires))
    assert len(inbox.sessions) == SESSIONS
    opened = time.perf_counter() - started

    crowded = await Wire.open(waiting.port, source=SOURCES[0])
    assert (await crowded.reply())[0] == 421
    assert (await crowded.reply()) == (0, ""), "closed without a greeting"
    full = await Wire.open(waiting.port, source="127.0.0.200")
    assert await full.reply() == (421, "4.3.2 Too many connections, try again later")
    for wire in (crowded, full):
        await wire.close()

    answers = await asyncio.gather(
        *(wire.deliver(ALICE, waiting.reply_to, waiting.reply("Yes") + b".\r\n") for wire in wires)
    )
    delivered = time.perf_counter() - started - opened
    assert [code for code, _ in answers] == [250] * SESSIONS
    await asyncio.gather(*(wire.close() for wire in wires))
    print(f"{SESSIONS} sessions open in {opened:.2f} s, {SESSIONS} replies in {delivered:.2f} s")

    await wait_for_state(waiting.mailgate.client, waiting.request_id, "approved")
    assert [d["verdict"] for d in await waiting.decisions()] == ["approve"]
    assert await waiting.refusals() == ["already decided"] * (SESSIONS - 1)
    async with asyncio.timeout(10):
        while inbox.sessions:
            await asyncio.sleep(0.02)
    late = await Wire.open(waiting.port, source=SOURCES[0])
    await late.hello()
    await late.close()
