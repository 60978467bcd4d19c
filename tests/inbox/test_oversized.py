"""Oversized mail: a 20 MB message, declared or not, and header sections past what a reply
carries. Each is refused with 552 (or 500 for a line past RFC 5321's 1,000 bytes), decides
nothing, and the session and the listener go on."""

from __future__ import annotations

from replying import ALICE, Wire, waiting_for_alice
from support import wait_for_state

TWENTY_MB = 20 * 1024 * 1024


def _big(reply: bytes, size: int) -> bytes:
    """The reply with lines of 998 characters appended until it weighs ``size`` bytes."""
    line = b"x" * 998 + b"\r\n"
    return reply + line * (size // len(line))


async def test_twenty_megabytes_are_refused_and_the_session_goes_on(start_listener, page_server):
    waiting = await waiting_for_alice(start_listener, page_server)
    wire = await Wire.open(waiting.port)
    await wire.hello()
    assert await wire.command(f"MAIL FROM:<{ALICE}> SIZE={TWENTY_MB}") == (
        552,
        "Error: message size exceeds fixed maximum message size",
    )
    assert (await wire.command("RSET"))[0] == 250
    undeclared = _big(waiting.reply("Yes"), TWENTY_MB) + b".\r\n"
    assert await wire.deliver(ALICE, waiting.reply_to, undeclared) == (
        552,
        "Error: Too much mail data",
    )
    assert await waiting.decisions() == []
    assert await wire.deliver(ALICE, waiting.reply_to, waiting.reply("Yes") + b".\r\n") == (
        250,
        "OK",
    )
    await wire.close()
    await wait_for_state(waiting.mailgate.client, waiting.request_id, "approved")
    assert [d["verdict"] for d in await waiting.decisions()] == ["approve"]


async def test_oversized_headers_are_refused(start_listener, page_server):
    waiting = await waiting_for_alice(start_listener, page_server)
    filler = b"X-Filler: " + b"a" * 900 + b"\r\n"
    padded = filler * 300 + waiting.reply("Yes")
    many = b"".join(b"X-%d: a\r\n" % n for n in range(50_000)) + waiting.reply("Yes")
    long_line = b"X-Long: " + b"c" * 2000 + b"\r\n" + waiting.reply("Yes")
    wire = await Wire.open(waiting.port)
    await wire.hello()
    assert await wire.deliver(ALICE, waiting.reply_to, padded + b".\r\n") == (
        552,
        "5.3.4 Message header larger than 262144 bytes",
    )
    assert (await wire.deliver(ALICE, waiting.reply_to, many + b".\r\n"))[0] == 552
    assert await wire.deliver(ALICE, waiting.reply_to, long_line + b".\r\n") == (
        500,
        "Line too long (see RFC5321 4.5.3.1.6)",
    )
    await wire.close()
    assert await waiting.state() == "waiting"
    assert await waiting.decisions() == []
