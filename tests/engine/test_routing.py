"""``poll://`` addresses route like the Resonate Server routes them."""

from __future__ import annotations

from resonate.connections.sse import SSEConnection

from service.engine import open_memory
from service.engine.routing import Address, Listener, Router, parse


def test_addresses_match_the_sdk_sse_connection() -> None:
    sse = SSEConnection(url="http://127.0.0.1:1", pid="p1", group="workers")
    conn = open_memory(pid="p1", group="workers")
    assert conn.unicast() == sse.unicast()
    assert conn.resolve_target("workers") == sse.resolve_target("workers")


def test_parse() -> None:
    assert parse("poll://any@workers") == Address(cast="any", group="workers", pid=None)
    assert parse("poll://uni@Workers/p-1") == Address(cast="uni", group="workers", pid="p-1")
    assert parse("local://any@workers") is None
    assert parse("poll://other@workers") is None
    assert parse("not an address") is None


def test_anycast_spreads_over_the_group_and_unicast_needs_the_pid() -> None:
    got: dict[str, list[str]] = {"a": [], "b": [], "c": []}
    router = Router()
    router.attach(Listener("workers", "a", got["a"].append))
    router.attach(Listener("workers", "b", got["b"].append))
    router.attach(Listener("other", "c", got["c"].append))

    for i in range(4):
        assert router.route("poll://any@workers", f"m{i}")
    assert sorted(got["a"] + got["b"]) == ["m0", "m1", "m2", "m3"]
    assert len(got["a"]) == len(got["b"]) == 2

    assert router.route("poll://uni@workers/b", "only-b")
    assert got["b"][-1] == "only-b"
    assert not router.route("poll://uni@workers/zz", "nobody")
    assert router.route("poll://any@workers/a", "prefers-a")
    assert got["a"][-1] == "prefers-a"
    assert not router.route("poll://any@empty", "nobody")
    assert got["c"] == []


def test_detached_listeners_get_nothing() -> None:
    got: list[str] = []
    router = Router()
    listener = Listener("workers", "a", got.append)
    router.attach(listener)
    router.detach(listener)
    assert not router.route("poll://any@workers", "m")
    assert got == []
