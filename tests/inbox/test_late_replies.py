"""Replies to a round that ended without its approver, expired or cancelled: the reply address
still verifies, but the answer comes too late. It is answered 250 (nothing to retry), recorded
as refused, and the approver is told once why it changed nothing; the request stays ended."""

from __future__ import annotations

import asyncio

from replying import ALICE, Waiting, Wire, waiting_for_alice
from support import wait_for_state


async def _answer_twice(waiting: Waiting) -> None:
    for body in ("Yes, approved.", "Yes! Did you get my answer?"):
        wire = await Wire.open(waiting.port)
        await wire.hello()
        answer = await wire.deliver(ALICE, waiting.reply_to, waiting.reply(body) + b".\r\n")
        assert answer == (250, "OK")
        await wire.close()


async def _notes(waiting: Waiting, subject: str) -> int:
    await asyncio.sleep(0.3)
    return sum(1 for r in waiting.sink.received if r.message["Subject"] == subject)


async def test_a_reply_to_an_expired_round(start_listener, page_server):
    waiting = await waiting_for_alice(start_listener, page_server, {"expires_in": "3s"})
    await wait_for_state(waiting.mailgate.client, waiting.request_id, "expired")
    await _answer_twice(waiting)
    assert await waiting.state() == "expired"
    assert [d["via"] for d in await waiting.decisions()] == ["expiry"]
    assert await waiting.refusals() == ["expired", "expired"]
    assert await _notes(waiting, "[Mailgate] Expired") == 1


async def test_a_reply_to_a_cancelled_round(start_listener, page_server):
    waiting = await waiting_for_alice(start_listener, page_server)
    cancel = await waiting.mailgate.client.request(
        "DELETE", f"/requests/{waiting.request_id}", json={"reason": "no longer needed"}
    )
    assert cancel.status_code == 202
    await wait_for_state(waiting.mailgate.client, waiting.request_id, "cancelled")
    await _answer_twice(waiting)
    assert await waiting.state() == "cancelled"
    assert [d["verdict"] for d in await waiting.decisions()] == ["cancel"]
    assert await waiting.refusals() == ["cancelled", "cancelled"]
    assert await _notes(waiting, "[Mailgate] Cancelled") == 1
