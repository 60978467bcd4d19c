"""The ``Index`` contract, method by method, on both indexes (see ``conftest.py``): what the
ledger relies on from whichever index an engine has. A method added to ``Index`` gets its
tests here, so the promise index and the Postgres index cannot drift apart."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from resonate.types import Value

from service.domain import Decision, Request
from service.ledger import Ledger
from service.ledger.audit import signed
from service.ledger.index import HeadQuery

from .conftest import SECRETS


async def test_a_taken_place_answers_with_what_is_stored(ledger: Ledger, new_request):
    request_id, _ = await new_request()
    chain = await ledger.chain(request_id)
    head = chain.head
    assert head is not None
    first = signed(
        replace(head, seq=2, kind="note", data={"who": "first"}, prev=head.hash), SECRETS
    )
    second = signed(replace(first, data={"who": "second"}), SECRETS)
    assert await ledger.index.put_event(first, head) == first
    assert await ledger.index.put_event(second, head) == first
    events = (await ledger.chain(request_id)).events
    assert [e.data for e in events[1:]] == [{"who": "first"}]


async def test_the_chain_is_in_order_with_the_newest_note(ledger: Ledger, new_request):
    request_id, _ = await new_request()
    for n in range(12):  # past 9, so text order of seq would differ from numeric order
        await ledger.append(request_id, "note", {"n": n})
    await ledger.index.put_note(request_id, "later", 2_000)
    await ledger.index.put_note(request_id, "earlier", 1_000)
    chain = await ledger.chain(request_id)
    assert [e.seq for e in chain.events] == list(range(1, 14))
    assert chain.note is not None and (chain.note.detail, chain.note.at) == ("later", 2_000)


async def test_heads_filter_and_page_one_row_per_request(ledger: Ledger, new_request):
    started = [await new_request("carol@example.com") for _ in range(7)]
    other, _ = await new_request("dave@example.com")
    for request_id, _ in started[:3]:
        await ledger.append(request_id, "finished", {"state": "failed", "detail": "gone"})
        await ledger.append(request_id, "note", {"after": "finishing"})

    seen = []
    cursor = None
    while True:
        heads, cursor = await ledger.index.heads(HeadQuery(approver="carol@example.com"), 2, cursor)
        assert len(heads) <= 2
        seen.extend(heads)
        if not cursor:
            break
    assert sorted(h.request_id for h in seen) == sorted(rid for rid, _ in started)
    newest = {h.request_id: h.seq for h in seen}
    for request_id, _ in started:
        assert newest[request_id] == (await ledger.chain(request_id)).head.seq

    done, _ = await ledger.index.heads(
        HeadQuery(open=False, approver="carol@example.com"), 50, None
    )
    assert {h.request_id for h in done} == {rid for rid, _ in started[:3]}
    failed, _ = await ledger.index.heads(HeadQuery(state="failed"), 50, None)
    assert {h.request_id for h in failed} == {rid for rid, _ in started[:3]}
    waiting, _ = await ledger.index.heads(
        HeadQuery(open=True, approver="dave@example.com"), 50, None
    )
    assert [h.request_id for h in waiting] == [other]


async def test_heads_find_a_pair(ledger: Ledger, new_request):
    url = "https://example.com/pair"
    first, request = await new_request("erin@example.com", 1, url=url)
    await new_request("frank@example.com", 1, url=url)
    heads, _ = await ledger.index.heads(HeadQuery(pair=request.pair), 50, None)
    assert [h.request_id for h in heads] == [first]


async def test_a_claim_is_won_once_per_name(ledger: Ledger, new_request):
    request_id, _ = await new_request()
    assert await ledger.index.claim(request_id, "help:r1", 1)
    assert not await ledger.index.claim(request_id, "help:r1", 2)
    assert await ledger.index.claim(request_id, "help:r2", 3)


async def test_rounds_are_the_settled_rounds_of_the_request(ledger: Ledger, new_request):
    request_id, _ = await new_request()
    other_id, _ = await new_request()
    tags = {"resonate:origin": request_id, "resonate:external": "true"}
    far = ledger.clock() + int(timedelta(days=1).total_seconds() * 1000)
    promises = ledger.resonate.promises
    for n in (1, 2, 3):
        await promises.create(f"{request_id}:{n}", far, Value(data=None), tags)
    await promises.create(
        f"{other_id}:1", far, Value(data=None), {**tags, "resonate:origin": other_id}
    )
    decision = Decision("reject", "no", "carol@example.com", "link", ledger.clock(), "n1")
    await promises.resolve(f"{request_id}:1", Value(data=decision.to_value()))
    await promises.reject(f"{request_id}:2", Value(data={"closed": "superseded"}))
    await promises.resolve(f"{other_id}:1", Value(data=decision.to_value()))

    rounds = await ledger.index.rounds(request_id)
    assert sorted(r.id for r in rounds) == [f"{request_id}:1", f"{request_id}:2"]
    settled = next(r for r in rounds if r.id == f"{request_id}:1")
    assert Decision.from_value(settled.value.data) == decision


async def test_a_request_started_twice_keeps_one_head(ledger: Ledger, new_request):
    request_id, request = await new_request()
    again = Request(request.url, request.approver, None, 5, "ci", None, "other")
    await ledger.start(request_id, again, timeout=timedelta(days=1), version=2)
    heads, _ = await ledger.index.heads(HeadQuery(pair=request.pair), 50, None)
    assert [(h.request_id, h.seq) for h in heads] == [(request_id, 1)]
