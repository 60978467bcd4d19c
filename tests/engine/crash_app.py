"""Run by ``test_crash.py`` as a real process, so tests can SIGKILL it at any point.

Roles: ``embedded DATA_DIR LOG [--decide]`` runs the engine and the workflow in one process;
``engine DATA_DIR PORT`` serves the engine; ``worker URL LOG`` executes workflows from it;
``client URL LOG [--decide]`` starts the workflow by rpc (like the gateway). Every step appends
``<event>`` lines to LOG (fsynced) so a test can wait for a point, kill, and count afterwards.
With ``--decide`` the process resolves the human promise once it exists and logs ``decided``.
The workflow has the product's shape: fetch → summarize (checkpointed) → promise → ask → wait.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

from resonate.context import Context
from resonate.resonate import Resonate
from resonate.types import Value

from service.engine import open_durable, serve_engine

WORKFLOW_ID = "wf-crash"
STEP_DELAY_S = float(os.environ.get("CRASH_STEP_DELAY_S", "0.3"))
LEASE = timedelta(seconds=4)
LOG = Path(os.environ.get("CRASH_LOG", "/dev/null"))


def log(event: str) -> None:
    with LOG.open("a") as f:
        f.write(f"{os.getpid()} {event}\n")
        f.flush()
        os.fsync(f.fileno())


async def fetch(ctx: Context, n: int) -> str:
    log("fetch start")
    await asyncio.sleep(STEP_DELAY_S)
    log("fetch done")
    return f"page {n}"


async def summarize(ctx: Context, text: str) -> str:
    log("summarize start")
    await asyncio.sleep(STEP_DELAY_S)
    log("summarize done")
    return f"summary of {text}"


def ask(ctx: Context, summary: str, promise_id: str) -> str:
    log(f"ask {promise_id}")
    return promise_id


async def approval(ctx: Context, n: int) -> dict[str, Any]:
    text = await ctx.run(fetch, n)
    summary = await ctx.run(summarize, text)
    decision = ctx.promise(timeout=timedelta(hours=1))
    await ctx.run(ask, summary, await decision.id())
    return {"summary": summary, "decision": await decision}


def pid_of(group: str) -> str:
    return f"{group}-{os.getpid()}"


def build(network: Any = None, url: str | None = None, group: str = "workers") -> Resonate:
    resonate = Resonate(network=network, url=url, group=group, pid=pid_of(group), ttl=LEASE, env={})
    resonate.register(approval)
    return resonate


async def decide(resonate: Resonate) -> None:
    while True:
        page = await resonate.promises.search(
            state="pending", tags={"resonate:external": "true"}, limit=10, cursor=None
        )
        if page.promises:
            await resonate.promises.resolve(page.promises[0].id, Value(data="approve"))
            log("decided")
            return
        await asyncio.sleep(0.05)


async def finish(resonate: Resonate, handle: Any, deciding: bool) -> None:
    if deciding:
        await decide(resonate)
    result = await handle.result()
    log(f"result {json.dumps(result, sort_keys=True)}")


async def embedded(data_dir: Path, deciding: bool) -> None:
    conn = open_durable(data_dir, pid=pid_of("workers"), group="workers", tick_interval_s=0.2)
    await conn.start()
    resonate = build(conn)
    log("started")
    await finish(resonate, resonate.run(WORKFLOW_ID, approval, 7), deciding)
    await resonate.stop()
    await conn.stop()


async def engine(data_dir: Path, port: int) -> None:
    conn = open_durable(data_dir, pid="engine", group="engine", tick_interval_s=0.2)
    await conn.start()
    log("engine started")
    await serve_engine(conn, "127.0.0.1", port, asyncio.Event())


async def worker(url: str) -> None:
    build(url=url)
    log("worker started")
    await asyncio.Event().wait()


async def client(url: str, deciding: bool) -> None:
    resonate = build(url=url, group="gateway")
    log("client started")
    handle = resonate.options(target="workers", timeout=timedelta(hours=2)).rpc(
        WORKFLOW_ID, approval, 7
    )
    await finish(resonate, handle, deciding)
    await resonate.stop()


def main(argv: list[str]) -> None:
    role, where = argv[0], argv[1]
    deciding = "--decide" in argv
    if role == "embedded":
        asyncio.run(embedded(Path(where), deciding))
    elif role == "engine":
        asyncio.run(engine(Path(where), int(argv[2])))
    elif role == "worker":
        asyncio.run(worker(where))
    elif role == "client":
        asyncio.run(client(where, deciding))


if __name__ == "__main__":
    main(sys.argv[1:])
