"""Run by ``test_faults.py`` in its own process: write until the file size limit is hit.

``RLIMIT_FSIZE`` makes every write past the limit fail with EFBIG, which SQLite reports as a
full disk: a real write failure, in a process of its own so the limit touches nothing else.
Prints one JSON line: how many creates were acknowledged, which one failed, and what a read of
the failed id answers afterwards (it must not be there: the engine rolled back).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import resource
import signal
import sys
from pathlib import Path
from typing import Any

import msgspec

from service.engine import EngineUnavailable, open_durable

corr = itertools.count()


async def request(conn: Any, kind: str, **data: Any) -> tuple[int, dict[str, Any]]:
    envelope = {"kind": kind, "head": {"corrId": f"c{next(corr)}", "version": "x"}, "data": data}
    answer = msgspec.json.decode(await conn.send(msgspec.json.encode(envelope).decode()))
    return answer["head"]["status"], answer["data"]


def limit_file_size(data_dir: Path, headroom_bytes: int) -> None:
    biggest = max(p.stat().st_size for p in data_dir.iterdir())
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    limit = biggest + headroom_bytes
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


async def main(data_dir: Path, headroom_bytes: int) -> None:
    conn = open_durable(data_dir, pid="filler", group="g")
    await conn.start()
    limit_file_size(data_dir, headroom_bytes)
    acked = 0
    failed = None
    for i in range(1_000_000):
        try:
            await request(
                conn, "promise.create", id=f"p{i}", timeoutAt=1 << 62, param={"data": "x" * 500}
            )
        except EngineUnavailable as exc:
            failed = f"p{i}"
            error = str(exc)
            break
        acked += 1
    try:
        after, _ = await request(conn, "promise.get", id=failed)
    except EngineUnavailable:
        after = "unavailable"
    print(json.dumps({"acked": acked, "failed": failed, "error": error, "after": after}))
    sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), int(sys.argv[2])))
