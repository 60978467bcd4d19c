"""Pipelining abuse: a whole conversation written before the greeting, a message sent on after
its recipient was refused, and floods of one command. Answers come one per command, in order;
what was refused decides nothing; floods end the session, not the listener."""

from __future__ import annotations

from replying import ALICE, Wire, waiting_for_alice
from support import REPLY_DOMAIN, wait_for_state


async def test_a_whole_conversation_written_at_once_is_answered_in_order(
    start_listener, page_server
):
    waiting = await waiting_for_alice(start_listener, page_server)
    wire = await Wire.open(waiting.port)
    await wire.send(  # before reading even the greeting
        b"EHLO client.example\r\n"
        + f"MAIL FROM:<{ALICE}>\r\nRCPT TO:<{waiting.reply_to}>\r\nDATA\r\n".encode()
        + waiting.reply("Yes, go ahead.")
        + b".\r\nQUIT\r\n"
    )
    codes = [(await wire.reply())[0] for _ in range(7)]
    assert codes == [220, 250, 250, 250, 354, 250, 221]
    await wire.close()
    await wait_for_state(waiting.mailgate.client, waiting.request_id, "approved")
    assert [d["verdict"] for d in await waiting.decisions()] == ["approve"]


async def test_a_message_sent_on_after_a_refused_recipient_decides_nothing(
    start_listener, page_server
):
    waiting = await waiting_for_alice(start_listener, page_server)
    wire = await Wire.open(waiting.port)
    await wire.send(
        b"EHLO client.example\r\n"
        + f"MAIL FROM:<{ALICE}>\r\nRCPT TO:<reply+forged@{REPLY_DOMAIN}>\r\nDATA\r\n".encode()
        + waiting.reply("Yes, approved.")
        + b".\r\n"
    )
    answers = []
    while (answer := await wire.reply())[0] != 0:
        answers.append(answer[0])
    assert answers[:5] == [220, 250, 250, 550, 503], "recipient refused, so no DATA"
    assert answers[-1] == 502, "the message's lines were taken as commands until it hung up"
    assert set(answers[5:-1]) <= {500}
    await wire.close()
    assert await waiting.state() == "waiting"
    assert await waiting.decisions() == []
    await _still_serving(waiting)


async def test_floods_of_one_command_end_the_session(start_listener, page_server):
    waiting = await waiting_for_alice(start_listener, page_server)
    wire = await Wire.open(waiting.port)
    await wire.send(
        b"EHLO client.example\r\n"
        + f"MAIL FROM:<{ALICE}>\r\n".encode()
        + f"RCPT TO:<{waiting.reply_to}>\r\n".encode() * 150
    )
    answers = [(await wire.reply())[0] for _ in range(3 + 101)]
    assert answers[:3] == [220, 250, 250]
    assert answers[3:103] == [250] * 100, "RFC 5321's 100 recipients are taken"
    assert answers[103] == 421
    assert await wire.reply() == (0, "")
    await wire.close()

    wire = await Wire.open(waiting.port)
    await wire.send(b"EHLO client.example\r\n" + b"NOOP\r\n" * 30)
    answers = [(await wire.reply())[0] for _ in range(2 + 21)]
    assert answers == [220, 250] + [250] * 20 + [421]
    await wire.close()
    assert await waiting.decisions() == []
    await _still_serving(waiting)


async def _still_serving(waiting) -> None:
    wire = await Wire.open(waiting.port)
    await wire.hello()
    assert await wire.deliver(ALICE, waiting.reply_to, waiting.reply("Yes") + b".\r\n") == (
        250,
        "OK",
    )
    await wire.close()
    await wait_for_state(waiting.mailgate.client, waiting.request_id, "approved")
