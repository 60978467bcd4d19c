"""SMTP smuggling: an end-of-data written with a bare LF or a bare CR (``<LF>.<CR><LF>``,
``<CR><LF>.<LF>``, …) must not end the message, so a second transaction hidden in the first
one's body is never run. One message in, one answer out, one judgement."""

from __future__ import annotations

from replying import ALICE, Wire, waiting_for_alice

FALSE_ENDS = [b"\n.\r\n", b"\r\n.\n", b"\n.\n", b"\r.\r\n", b"\r\n.\r", b"\r\n.\x00\r\n"]


def smuggled(reply_to: str) -> bytes:
    """A whole approving transaction from alice, to run if the false end were believed."""
    return (
        f"MAIL FROM:<{ALICE}>\r\nRCPT TO:<{reply_to}>\r\nDATA\r\n"
        f"From: Alice <{ALICE}>\r\nTo: {reply_to}\r\nSubject: Re: approve\r\n"
        "Message-ID: <smuggled@example.com>\r\n\r\nYes, approved.\r\n"
    ).encode()


async def test_a_false_end_of_data_does_not_split_a_strangers_message(start_listener, page_server):
    waiting = await waiting_for_alice(start_listener, page_server)
    for false_end in FALSE_ENDS:
        wire = await Wire.open(waiting.port)
        await wire.hello()
        outer = (
            f"From: Mallory <mallory@evil.example>\r\nTo: {waiting.reply_to}\r\n"
            "Subject: hello\r\n\r\nJust saying hello."
        ).encode()
        data = outer + false_end + smuggled(waiting.reply_to) + b"\r\n.\r\n"
        code, text = await wire.deliver("mallory@evil.example", waiting.reply_to, data)
        assert (code, text) == (550, "5.7.1 Only the approver can answer this request"), false_end
        assert await wire.command("QUIT") == (221, "Bye"), "no answers were left for a 2nd message"
        await wire.close()
    assert await waiting.state() == "waiting"
    assert await waiting.decisions() == []
    assert await waiting.refusals() == ["sender is not the approver"] * len(FALSE_ENDS)


async def test_a_no_with_a_smuggled_yes_inside_is_one_no(start_listener, page_server):
    waiting = await waiting_for_alice(start_listener, page_server)
    wire = await Wire.open(waiting.port)
    await wire.hello()
    no = waiting.reply("No, the second paragraph is wrong.").removesuffix(b"\r\n")
    data = no + b"\n.\r\n" + smuggled(waiting.reply_to) + b"\r\n.\r\n"
    assert await wire.deliver(ALICE, waiting.reply_to, data) == (250, "OK")
    assert await wire.command("QUIT") == (221, "Bye")
    await wire.close()
    assert (await waiting.asked(2))["Subject"].endswith("(round 2)")
    decided = await waiting.decisions()
    assert [d["verdict"] for d in decided] == ["reject"]
    assert all(d["evidence"]["message_id"] != "<smuggled@example.com>" for d in decided)
