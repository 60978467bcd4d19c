"""Fixtures the fetcher tests share: recorded sleeps and fetchers that are closed for them."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from support import Sleeps

from service.steps.fetch import Fetcher


@pytest.fixture
def sleeps() -> Sleeps:
    """The fetchers' sleep, recorded: retries are checked without waiting for them."""
    return Sleeps()


@pytest.fixture
async def make_fetcher_of(sleeps: Sleeps) -> AsyncIterator[Callable[..., Any]]:
    """Fetchers of a given kind that may reach loopback (where every test page lives) and sleep
    into ``sleeps``; all of them are closed at teardown."""
    made: list[Fetcher] = []

    def make[F: Fetcher](kind: type[F], **options: Any) -> F:
        fetcher = kind(**{"allow_private": True, "attempts": 3, "sleep": sleeps, **options})
        made.append(fetcher)
        return fetcher

    yield make
    for fetcher in made:
        await fetcher.close()
