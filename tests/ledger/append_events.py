"""Run as a process: append ``count`` events to one request through a remote engine.

``python append_events.py ENGINE_URL REQUEST_ID SIDE COUNT SECRET`` — used by the test that has
two processes write one request's trail at the same time.
"""

from __future__ import annotations

import asyncio
import sys

from resonate.resonate import Resonate

from service.ledger import Ledger


async def main(url: str, request_id: str, side: str, count: int, secret: str) -> None:
    resonate = Resonate(url=url, group="appender", pid=side, env={}, sources=[])
    ledger = Ledger(resonate, secrets=(secret,), clock=lambda: _now())
    for n in range(count):
        seen = await ledger.chain(request_id)
        await ledger.append(request_id, "note", {"side": side, "n": n}, chain=seen)
    await resonate.stop()


def _now() -> int:
    import time

    return time.time_ns() // 1_000_000


if __name__ == "__main__":
    url, request_id, side, count, secret = sys.argv[1:]
    asyncio.run(main(url, request_id, side, int(count), secret))
