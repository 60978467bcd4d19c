"""Invalid charsets: labels that name nothing, name a non-text codec, lie about the bytes, or
are kilobytes long; encoded words with charsets that do not exist. None breaks the listener:
text that does not read as an answer decides nothing (one help note per round), a stranger's
message stays a stranger's, and the approver's answer in UTF-7 is still her answer."""

from __future__ import annotations

from replying import ALICE, Wire, waiting_for_alice

GARBAGE = b"\xff\xfe\xfa\x00\x81 \xc3\x28 \xe2\x82"
LABELS = [
    "x-no-such-charset",
    "utf-8",  # but the bytes are not
    "utf-16",
    "base64",  # a codec, but bytes to bytes
    "rot13",
    "zlib",
    "idna",
    "x" * 900,
    "utf-8\x00evil",
]


def _raw(reply_to: str, sender: str, charset: str, body: bytes, subject: str = "Re") -> bytes:
    return (
        (
            f"From: {sender}\r\nTo: {reply_to}\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n"
            f'Content-Type: text/plain; charset="{charset}"\r\n'
            "Content-Transfer-Encoding: 8bit\r\n\r\n"
        ).encode("utf-8", "surrogateescape")
        + body
        + b"\r\n"
    )


async def test_charsets_that_lie_or_name_nothing(start_listener, page_server):
    waiting = await waiting_for_alice(start_listener, page_server)
    wire = await Wire.open(waiting.port)
    await wire.hello()
    for label in LABELS:
        message = _raw(waiting.reply_to, f"Alice <{ALICE}>", label, GARBAGE)
        answer = await wire.deliver(ALICE, waiting.reply_to, message + b".\r\n")
        assert answer == (250, "OK"), label[:40]
    bogus_words = _raw(
        waiting.reply_to,
        f"=?x-bogus?B?QWxpY2U=?= <{ALICE}>",
        "utf-8",
        GARBAGE,
        subject="=?unknown-8bit?Q?=FF=FE?= =?utf-8?B?////?=",
    )
    assert await wire.deliver(ALICE, waiting.reply_to, bogus_words + b".\r\n") == (250, "OK")
    stranger = _raw(waiting.reply_to, "Mallory <mallory@evil.example>", "utf-7", b"+AFkAZQBz-")
    assert (await wire.deliver("mallory@evil.example", waiting.reply_to, stranger + b".\r\n"))[
        0
    ] == 550
    assert await waiting.state() == "waiting"
    assert await waiting.decisions() == []
    unclear = [e for e in await waiting.events() if e["kind"] == "reply_unclear"]
    assert len(unclear) == len(LABELS) + 1
    assert (await waiting.asked(2))["Subject"] == "[Mailgate] Reply YES or NO"

    no_in_utf7 = _raw(waiting.reply_to, f"Alice <{ALICE}>", "utf-7", b"+AE4-o, not this one.")
    assert await wire.deliver(ALICE, waiting.reply_to, no_in_utf7 + b".\r\n") == (250, "OK")
    await wire.close()
    assert (await waiting.asked(3))["Subject"].endswith("(round 2)")
    assert [d["verdict"] for d in await waiting.decisions()] == ["reject"]
    assert len(waiting.sink.received) == 3, "one help note in the round, whatever came in"
