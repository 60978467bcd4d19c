"""``promise.search``: the Resonate Server's semantics, answered from the engine's indexes."""

from __future__ import annotations

import itertools
from typing import Any

import msgspec
import pytest
from resonate.error import ServerError
from resonate.resonate import Resonate
from resonate.types import Value

from service.engine import EngineConnection

FAR = 1 << 62
corr = itertools.count()


async def search(conn: EngineConnection, **data: Any) -> tuple[int, dict[str, Any]]:
    envelope = {
        "kind": "promise.search",
        "head": {"corrId": f"c{next(corr)}", "version": "2026-04-01"},
        "data": data,
    }
    response = msgspec.json.decode(await conn.send(msgspec.json.encode(envelope).decode()))
    return response["head"]["status"], response["data"]


async def seed(resonate: Resonate) -> None:
    for i in range(25):
        tags = {"kind": "even" if i % 2 == 0 else "odd", "batch": "a" if i < 10 else "b"}
        await resonate.promises.create(f"p{i:02d}", FAR, Value(data=i), tags)
    for i in range(0, 25, 3):
        await resonate.promises.resolve(f"p{i:02d}", Value(data="done"))


async def test_filters_by_state_and_tag_subset(engine, make_resonate) -> None:
    resonate = make_resonate(engine)
    await seed(resonate)
    page = await resonate.promises.search(
        state="pending", tags={"kind": "even", "batch": "a"}, limit=100, cursor=None
    )
    assert [p.id for p in page.promises] == ["p02", "p04", "p08"]
    assert page.cursor is None
    resolved = await resonate.promises.search(
        state="resolved", tags={"batch": "b"}, limit=100, cursor=None
    )
    assert [p.id for p in resolved.promises] == ["p12", "p15", "p18", "p21", "p24"]
    assert all(p.value.data == "done" for p in resolved.promises)


async def test_pages_in_id_order_with_the_last_id_as_cursor(engine, make_resonate) -> None:
    resonate = make_resonate(engine)
    await seed(resonate)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await resonate.promises.search(state=None, tags=None, limit=7, cursor=cursor)
        pages += 1
        seen += [p.id for p in page.promises]
        if page.cursor is None:
            break
        assert page.cursor == page.promises[-1].id
        cursor = page.cursor
    assert seen == [f"p{i:02d}" for i in range(25)]
    assert pages == 4


async def test_exact_page_size_has_no_cursor(engine, make_resonate) -> None:
    resonate = make_resonate(engine)
    await seed(resonate)
    page = await resonate.promises.search(state=None, tags={"batch": "a"}, limit=10, cursor=None)
    assert len(page.promises) == 10
    assert page.cursor is None


async def test_settled_promises_leave_the_pending_results(engine, make_resonate) -> None:
    resonate = make_resonate(engine)
    await seed(resonate)
    before = await resonate.promises.search(state="pending", tags=None, limit=100, cursor=None)
    await resonate.promises.reject("p01", Value(data="no"))
    after = await resonate.promises.search(state="pending", tags=None, limit=100, cursor=None)
    assert "p01" in [p.id for p in before.promises]
    assert [p.id for p in after.promises] == [p.id for p in before.promises if p.id != "p01"]
    rejected = await resonate.promises.search(state="rejected", tags=None, limit=100, cursor=None)
    assert [p.id for p in rejected.promises] == ["p01"]


async def test_id_pattern_with_star(engine, make_resonate) -> None:
    resonate = make_resonate(engine)
    await seed(resonate)
    status, data = await search(engine, id="p1*", state="pending")
    assert status == 200
    assert [p["id"] for p in data["promises"]] == ["p10", "p11", "p13", "p14", "p16", "p17", "p19"]
    status, data = await search(engine, id="*4")
    assert [p["id"] for p in data["promises"]] == ["p04", "p14", "p24"]
    status, data = await search(engine, id="p07")
    assert [p["id"] for p in data["promises"]] == ["p07"]
    status, data = await search(engine, id="nope")
    assert data["promises"] == []


async def test_unknown_tag_value_finds_nothing(engine, make_resonate) -> None:
    resonate = make_resonate(engine)
    await seed(resonate)
    page = await resonate.promises.search(state=None, tags={"kind": "prime"}, limit=5, cursor=None)
    assert page.promises == []
    assert page.cursor is None


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"state": "done"}, "state"),
        ({"tags": {"a": 1}}, "tags"),
        ({"cursor": 5}, "cursor"),
    ],
)
async def test_bad_queries_are_400(engine, data: dict[str, Any], message: str) -> None:
    status, body = await search(engine, **data)
    assert status == 400
    assert message in body["error"]


async def test_sdk_sees_a_bad_query_as_server_error(engine, make_resonate) -> None:
    resonate = make_resonate(engine)
    with pytest.raises(ServerError) as caught:
        await resonate.promises.search(state="bogus", tags=None, limit=None, cursor=None)
    assert caught.value.code == 400


async def test_tags_kept_out_of_the_index_are_still_matched_exactly(engine, make_resonate) -> None:
    """``resonate:scope`` and ``resonate:target`` are on nearly every promise and not indexed;
    a search by them pages through the rest of the query and filters."""
    resonate = make_resonate(engine)
    for i in range(40):
        scope = "local" if i % 7 == 0 else "global"
        tags = {"resonate:scope": scope, "batch": "a" if i % 2 else "b"}
        await resonate.promises.create(f"q{i:02d}", FAR, Value(data=i), tags)
    seen: list[str] = []
    cursor = None
    while True:
        page = await resonate.promises.search(
            state="pending", tags={"resonate:scope": "local"}, limit=2, cursor=cursor
        )
        seen += [p.id for p in page.promises]
        cursor = page.cursor
        if not cursor:
            break
    assert seen == ["q00", "q07", "q14", "q21", "q28", "q35"]
    both = await resonate.promises.search(
        state=None, tags={"resonate:scope": "local", "batch": "a"}, limit=10, cursor=None
    )
    assert [p.id for p in both.promises] == ["q07", "q21", "q35"]
