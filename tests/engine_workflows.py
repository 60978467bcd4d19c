"""The workflow the engine tests drive through real SDK instances: one step, then a wait on a
promise that the test resolves, as a person's decision would."""

from __future__ import annotations

import asyncio
from typing import Any

from resonate.context import Context
from resonate.handle import ResonateHandle
from resonate.resonate import Resonate


def double(ctx: Context, n: int) -> int:
    return n * 2


async def approval(ctx: Context, n: int) -> dict[str, Any]:
    doubled = await ctx.run(double, n)
    decision = await ctx.promise()
    return {"doubled": doubled, "decision": decision}


async def pending_child(resonate: Resonate, parent: str, timeout_s: float = 10.0) -> str:
    """The id of the first pending promise whose parent is ``parent``, once it exists."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        page = await resonate.promises.search(
            state="pending", tags={"resonate:parent": parent}, limit=10, cursor=None
        )
        children = [p.id for p in page.promises if p.id != parent]
        if children:
            return children[0]
        await asyncio.sleep(0.02)
    msg = f"no pending child of {parent} after {timeout_s}s"
    raise AssertionError(msg)


async def suspended_approval(
    resonate: Resonate, id: str, n: int
) -> tuple[ResonateHandle[dict[str, Any]], str]:
    """Run ``approval`` (registered on ``resonate``) until it waits for its decision: the run's
    handle and the id of the decision's promise."""
    handle = resonate.run(id, approval, n)
    return handle, await pending_child(resonate, id)
