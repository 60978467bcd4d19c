"""Finding a pair's newest request when retention has removed its oldest generations."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from resonate.resonate import Resonate
from resonate.types import Value

from service import engine
from service.domain import workflow_id
from service.requests import latest

URL, APPROVER = "https://example.com/page", "alice@example.com"


@pytest.fixture
async def resonate() -> AsyncIterator[Resonate]:
    connection = engine.open_memory(pid="p", group="g")
    await connection.start()
    client = Resonate(network=connection, group="g", pid="p", env={}, autostart=False)
    client.start()
    yield client
    await client.stop()
    await connection.stop()


async def _keep(resonate: Resonate, *generations: int) -> None:
    for generation in generations:
        await resonate.promises.create(
            workflow_id(URL, APPROVER, generation), 2**62, Value(data=None), {}
        )


async def test_no_request_yet(resonate: Resonate):
    assert await latest(resonate, URL, APPROVER) is None


async def test_newest_of_an_unbroken_run(resonate: Resonate):
    await _keep(resonate, 1, 2, 3)
    found = await latest(resonate, URL, APPROVER)
    assert found is not None
    assert found[0] == workflow_id(URL, APPROVER, 3)


async def test_retired_generations_below_the_kept_ones_are_skipped(resonate: Resonate):
    await _keep(resonate, 4, 5)
    found = await latest(resonate, URL, APPROVER)
    assert found is not None
    assert found[0] == workflow_id(URL, APPROVER, 5)
