"""The ledger over a real engine: appends, keys, concurrency, listings and pairs."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from service.domain import Request
from service.ledger import Ledger
from service.ledger.index import Chain


async def test_a_started_request_reads_back_with_its_submission(ledger, new_request):
    request_id, request = await new_request()
    record = await ledger.read(request_id)
    assert record is not None and record.request == request
    assert [e.kind for e in record.chain.events] == ["submitted"]
    view = record.view()
    assert (view.state, view.url, view.approver) == ("summarizing", request.url, request.approver)


async def test_a_second_start_of_the_same_id_is_not_a_creation(ledger, new_request, resonate):
    request_id, request = await new_request()
    again = Request(request.url, request.approvers, None, 5, "ci", None, "other-nonce")
    from datetime import timedelta

    assert not await ledger.start(request_id, again, timeout=timedelta(days=1), version=2)
    record = await ledger.read(request_id)
    assert record is not None and record.request.nonce == request.nonce


async def test_keyed_appends_record_a_fact_once(ledger, new_request):
    request_id, _ = await new_request()
    first = await ledger.append(request_id, "fetched", {"chars": 10}, key="fetched")
    again = await ledger.append(request_id, "fetched", {"chars": 99}, key="fetched")
    assert again == first
    events = (await ledger.chain(request_id)).events
    assert [e.kind for e in events] == ["submitted", "fetched"]


async def test_concurrent_appenders_queue_into_one_chain(make_ledger, new_request):
    """Two ledgers (as two processes would be) append at once from stale views of the chain."""
    request_id, _ = await new_request()
    left, right = make_ledger(), make_ledger()
    stale = Chain((await left.chain(request_id)).events)

    async def burst(ledger: Ledger, side: str) -> None:
        for n in range(15):
            await ledger.append(request_id, "note", {"side": side, "n": n}, chain=stale)

    await asyncio.gather(burst(left, "left"), burst(right, "right"))
    events = (await left.chain(request_id)).events
    assert [e.seq for e in events] == list(range(1, 32))
    noted = sorted((e.data["side"], e.data["n"]) for e in events if e.kind == "note")
    assert noted == sorted([("left", n) for n in range(15)] + [("right", n) for n in range(15)])
    verification = await left.verify(request_id)
    assert verification is not None and verification.verdict == "intact"


async def test_concurrent_appends_of_one_key_record_it_once(make_ledger, new_request):
    request_id, _ = await new_request()
    ledgers = [make_ledger() for _ in range(5)]
    results = await asyncio.gather(
        *(
            lg.append(request_id, "finished", {"state": "failed", "detail": "x"}, key="finished")
            for lg in ledgers
        )
    )
    assert len({e.seq for e in results}) == 1
    events = (await ledgers[0].chain(request_id)).events
    assert [e.kind for e in events].count("finished") == 1


async def test_an_append_unless_is_not_written_after_the_event_that_forbids_it(
    make_ledger, new_request
):
    """As a vote from a stale view of the chain meets its round's decision, written meanwhile by
    another process: the vote is not written, and the decision is what the voter gets back."""
    request_id, _ = await new_request()
    voter, decider = make_ledger(), make_ledger()
    stale = Chain((await voter.chain(request_id)).events)
    await decider.append(request_id, "note", {"closes": "r1"})

    def closed(event: Any) -> bool:
        return event.data.get("closes") == "r1"

    got = await voter.append(request_id, "note", {"vote": "ann"}, chain=stale, unless=closed)
    assert (got.data, got.seq) == ({"closes": "r1"}, 2)
    again = await voter.append(request_id, "note", {"vote": "ann"}, unless=closed)
    assert again == got
    events = (await voter.chain(request_id)).events
    assert [e.data for e in events[1:]] == [{"closes": "r1"}]


async def test_only_the_newest_event_is_listed_and_a_stale_head_heals(ledger, new_request):
    request_id, _ = await new_request()
    await ledger.append(request_id, "fetched", {"chars": 1})
    head = await ledger.append(
        request_id, "summarized", {"round": 1, "text": "T.", "summarizer": "x", "model": None}
    )
    # A crash between writing an event and retiring the one before: forge that state.
    await ledger.index.put_event(
        type(head)(**{**head.to_value(), "seq": head.seq + 1, "prev": head.hash}), None
    )
    rows = (await ledger.listing()).rows
    assert [r["id"] for r in rows] == [request_id]
    chain = await ledger.chain(request_id)
    assert len(chain.events) == head.seq + 1


async def test_listings_filter_by_state_and_approver_and_page_with_a_cursor(
    ledger: Ledger, new_request: Callable[..., Any]
):
    alice = [await new_request("alice@example.com") for _ in range(5)]
    bob = [await new_request("bob@example.com") for _ in range(3)]
    for request_id, _ in alice[:2]:
        await ledger.append(request_id, "finished", {"state": "failed", "detail": "gone"})

    failed = await ledger.listing(state="failed")
    assert {r["id"] for r in failed.rows} == {rid for rid, _ in alice[:2]}
    mine = await ledger.listing(approver="bob@example.com")
    assert {r["id"] for r in mine.rows} == {rid for rid, _ in bob}

    seen: list[str] = []
    cursor = None
    while True:
        page = await ledger.listing(limit=3, cursor=cursor)
        seen.extend(r["id"] for r in page.rows)
        cursor = page.cursor
        if not cursor:
            break
    assert len(seen) == len(set(seen)) == 8
    finished = {rid for rid, _ in alice[:2]}
    assert set(seen[-2:]) == finished, "open requests come first"


async def test_the_latest_of_a_pair_skips_retired_generations(ledger, new_request):
    url = "https://example.com/generations"
    for generation in (4, 5):
        await new_request("alice@example.com", generation, url=url)
    found = await ledger.latest(Request(url, ("alice@example.com",), None, 0).pair)
    assert found is not None and found.request_id.endswith("-5")
    assert await ledger.latest(Request(url, ("bob@example.com",), None, 0).pair) is None


async def test_a_claim_is_won_once(ledger, new_request):
    request_id, _ = await new_request()
    wins = await asyncio.gather(*(ledger.claim_once(request_id, "help:r1") for _ in range(6)))
    assert sorted(wins) == [False] * 5 + [True]
    assert await ledger.claim_once(request_id, "help:r2")


async def test_notes_read_back_newest_first(ledger, new_request):
    request_id, _ = await new_request()
    await ledger.note(request_id, "Ollama unreachable, retrying")
    await ledger.note(request_id, "model not pulled, retrying")
    record = await ledger.read(request_id)
    assert record is not None and record.view().detail == "model not pulled, retrying"


async def test_a_request_of_several_approvers_is_listed_for_each_and_found_by_its_pair(
    ledger: Ledger,
):
    from datetime import timedelta

    from service.domain import Quorum, workflow_id

    people = ("ann@example.com", "ben@example.com")
    url = "https://example.com/together"
    request = Request(url, people, None, ledger.clock(), "local", None, "n", quorum=Quorum("all"))
    request_id = workflow_id(url, people, quorum=Quorum("all"))
    await ledger.start(request_id, request, timeout=timedelta(days=1), version=2)
    for person in people:
        rows = (await ledger.listing(approver=person)).rows
        assert [r["id"] for r in rows] == [request_id]
    found = await ledger.latest(request.pair)
    assert found is not None and found.request_id == request_id
    other = Request(url, people, None, 0, quorum=Quorum("any"))
    assert await ledger.latest(other.pair) is None
