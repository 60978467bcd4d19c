"""Slowloris: clients that connect and say nothing, or trickle a command or a message one byte
at a time, are told 421 and dropped when their time is up (MAILGATE_INBOUND_TIMEOUT for the next
command, MAILGATE_INBOUND_DATA_TIMEOUT for a message), while a real reply is served at once."""

from __future__ import annotations

import asyncio
import contextlib
import time

from replying import ALICE, Wire, waiting_for_alice
from support import wait_for_state

SLOW = "127.0.0.66"
TIMEOUTS = {"MAILGATE_INBOUND_TIMEOUT": "1s", "MAILGATE_INBOUND_DATA_TIMEOUT": "2s"}


async def _trickle(wire: Wire, data: bytes, every_s: float = 0.1) -> None:
    with contextlib.suppress(ConnectionError):
        for byte in data:
            await wire.send(bytes([byte]))
            await asyncio.sleep(every_s)


async def _dropped_after(wire: Wire, since: float) -> float:
    """Seconds from ``since`` until the server said 421 and hung up."""
    code, text = await wire.reply(timeout=10)
    assert (code, text) == (421, "4.4.2 Timeout waiting for your command, closing")
    assert await wire.reply(timeout=5) == (0, "")
    return time.perf_counter() - since


async def test_idle_and_trickling_clients_are_dropped_and_hold_nothing(start_listener, page_server):
    waiting = await waiting_for_alice(start_listener, page_server, **TIMEOUTS)
    inbox = waiting.mailgate.app.inbox
    assert inbox is not None
    started = time.perf_counter()

    idle = await asyncio.gather(*(Wire.open(waiting.port, source=SLOW) for _ in range(45)))
    for wire in idle:
        assert (await wire.reply())[0] == 220
    command = await Wire.open(waiting.port, source=SLOW)
    assert (await command.reply())[0] == 220
    trickling_command = asyncio.create_task(_trickle(command, b"EHLO client.example\r\n", 0.2))
    message = await Wire.open(waiting.port, source=SLOW)
    assert (await message.reply())[0] == 220
    assert (await message.command("EHLO client.example"))[0] == 250
    assert (await message.command(f"MAIL FROM:<{ALICE}>"))[0] == 250
    assert (await message.command(f"RCPT TO:<{waiting.reply_to}>"))[0] == 250
    assert (await message.command("DATA"))[0] == 354
    in_data = time.perf_counter()
    trickling_data = asyncio.create_task(_trickle(message, waiting.reply("Yes") * 10))

    served = time.perf_counter()
    prompt = await Wire.open(waiting.port)
    await prompt.hello()
    assert await prompt.deliver(
        ALICE, waiting.reply_to, waiting.reply("No, not yet") + b".\r\n"
    ) == (
        250,
        "OK",
    ), "the listener answers a real reply while 47 slow clients hang on"
    await prompt.close()
    assert time.perf_counter() - served < 2

    idle_for = await asyncio.gather(*(_dropped_after(wire, started) for wire in idle))
    assert all(0.9 <= seconds <= 5 for seconds in idle_for)
    assert 0.9 <= await _dropped_after(command, started) <= 5
    assert 1.9 <= await _dropped_after(message, in_data) <= 6
    for task in (trickling_command, trickling_data):
        await task
    for wire in [*idle, command, message]:
        await wire.close()

    async with asyncio.timeout(5):
        while inbox.sessions:
            await asyncio.sleep(0.02)
    await waiting.asked(2)
    assert [d["verdict"] for d in await waiting.decisions()] == ["reject"]
    assert (await wait_for_state(waiting.mailgate.client, waiting.request_id, "waiting"))["rounds"][
        0
    ]["decision"] == "reject"
