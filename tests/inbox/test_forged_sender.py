"""Someone else holding a valid reply address: a forged From signed by another domain (DKIM
misaligned) or not signed, a tampered signed reply, the address used under the attacker's own
name, and alice's captured reply sent again. Each is refused or recognised and decides nothing;
only alice's own, aligned reply decides."""

from __future__ import annotations

from collections.abc import Callable

from dkim_keys import signer
from replying import ALICE, Waiting, Wire, waiting_for_alice
from support import wait_for_state

MALLORY = "mallory@evil.example"


def _dns(*domains: str) -> Callable[..., bytes | None]:
    """TXT answers for the test key published under each domain, as DNS would give them."""
    records = {signer(d).dns_record().name: signer(d).dns_record().value for d in domains}

    def lookup(name: bytes | str, timeout: float = 5) -> bytes | None:
        wanted = (name.decode() if isinstance(name, bytes) else name).rstrip(".")
        return records[wanted].encode() if wanted in records else None

    return lookup


async def _deliver(waiting: Waiting, envelope_sender: str, message: bytes) -> tuple[int, str]:
    wire = await Wire.open(waiting.port)
    await wire.hello()
    answer = await wire.deliver(envelope_sender, waiting.reply_to, message + b".\r\n")
    await wire.close()
    return answer


async def test_with_dkim_required_only_an_aligned_signature_decides(start_listener, page_server):
    waiting = await waiting_for_alice(start_listener, page_server, MAILGATE_REQUIRE_DKIM="1")
    inbox = waiting.mailgate.app.inbox
    assert inbox is not None
    inbox.handler.dns_txt = _dns("example.com", "evil.example")
    yes = waiting.reply("Yes, approved.")

    misaligned = signer("evil.example").sign(yes)
    assert await _deliver(waiting, MALLORY, misaligned) == (
        550,
        "5.7.20 DKIM check failed: no valid DKIM signature aligned with example.com",
    )
    unsigned = await _deliver(waiting, MALLORY, yes)
    assert unsigned == (550, "5.7.20 DKIM check failed: the reply carries no DKIM signature")
    tampered = signer("example.com").sign(waiting.reply("No.")).replace(b"No.", b"Yes")
    assert (await _deliver(waiting, ALICE, tampered))[0] == 550
    assert await waiting.state() == "waiting"
    assert await waiting.decisions() == []
    refused = await waiting.refusals()
    assert len(refused) == 3
    assert all(why.startswith("DKIM: ") for why in refused)

    assert await _deliver(waiting, ALICE, signer("example.com").sign(yes)) == (250, "OK")
    await wait_for_state(waiting.mailgate.client, waiting.request_id, "approved")
    (decided,) = await waiting.decisions()
    assert (decided["verdict"], decided["evidence"]["dkim"]) == ("approve", "pass")


async def test_a_valid_reply_address_in_anyone_elses_hands(start_listener, page_server):
    waiting = await waiting_for_alice(start_listener, page_server)
    as_mallory = waiting.reply("Yes, approved.", sender=f"Mallory <{MALLORY}>")
    assert await _deliver(waiting, MALLORY, as_mallory) == (
        550,
        "5.7.1 Only the approver can answer this request",
    )
    two_froms = waiting.reply("Yes", sender=f"Alice <{ALICE}>, Mallory <{MALLORY}>")
    assert (await _deliver(waiting, MALLORY, two_froms))[0] == 550
    assert await waiting.state() == "waiting"
    assert await waiting.refusals() == ["sender is not the approver"] * 2

    captured = waiting.reply("No, the dates are wrong.")
    assert await _deliver(waiting, ALICE, captured) == (250, "OK")
    await waiting.asked(2)
    replayed = await _deliver(waiting, MALLORY, captured)
    assert replayed == (250, "OK"), "the same message again is a duplicate delivery"
    decided = await waiting.decisions()
    assert [d["verdict"] for d in decided] == ["reject"]
    assert len(waiting.sink.received) == 2, "no 'already decided' note for a replay"
