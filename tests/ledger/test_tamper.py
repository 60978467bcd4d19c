"""The audit trail end to end: what a decision leaves behind, and edits made on disk behind
Mailgate's back found by `GET /requests/{id}/events` and `mailgate audit verify`."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
from support import PageServer, local, wait_for_state

from service.domain import workflow_id

APPROVER = "erin@example.com"


def edit_stored_event(
    data_dir: Path, promise_id: str, edit: Callable[[dict[str, Any]], Any]
) -> None:
    """Rewrite (or, when ``edit`` answers None, delete) one promise's row in the engine's
    database, as someone with the file could."""
    path = data_dir / "engine" / "engine.sqlite3"
    with sqlite3.connect(path) as db:
        row = db.execute("SELECT data FROM promises WHERE id = ?", (promise_id,)).fetchone()
        promise = msgspec.msgpack.decode(row[0])
        changed = edit(json.loads(base64.b64decode(promise["param"]["data"])))
        if changed is None:
            db.execute("DELETE FROM promises WHERE id = ?", (promise_id,))
            db.execute("DELETE FROM promise_tags WHERE id = ?", (promise_id,))
            return
        promise["param"]["data"] = base64.b64encode(json.dumps(changed).encode()).decode()
        db.execute(
            "UPDATE promises SET data = ? WHERE id = ?",
            (msgspec.msgpack.encode(promise), promise_id),
        )


async def _approved_request(start_mailgate, page_server: PageServer, data: Path) -> str:
    mailgate = await start_mailgate(MAILGATE_ENGINE="durable", MAILGATE_DATA_DIR=str(data))
    body = {"url": page_server.base + "/article", "email": APPROVER}
    request_id = (await mailgate.client.post("/requests", json=body)).json()["id"]
    ask = await mailgate.notifier.wait_for(1)
    await mailgate.client.get(local(ask.decide_url), headers={"user-agent": "Mail Scanner 1.0"})
    await mailgate.client.post(
        local(ask.decide_url),
        data={"verdict": "approve", "reason": "Looks right."},
        headers={"user-agent": "Firefox/140"},
    )
    await wait_for_state(mailgate.client, request_id, "approved")
    await mailgate.app.stop()
    return request_id


async def test_a_decision_leaves_its_evidence_and_edits_are_found(
    start_mailgate, page_server: PageServer, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    request_id = await _approved_request(start_mailgate, page_server, data)
    assert request_id == workflow_id(page_server.base + "/article", APPROVER)

    first = await start_mailgate(MAILGATE_ENGINE="durable", MAILGATE_DATA_DIR=str(data))
    trail = (await first.client.get(f"/requests/{request_id}/events")).json()
    kinds = [e["kind"] for e in trail["events"]]
    assert kinds == [
        "submitted",
        "fetched",
        "summarized",
        "asked",
        "link_opened",
        "decided",
        "finished",
    ]
    assert trail["verification"]["verdict"] == "intact"
    submitted, decided = trail["events"][0], trail["events"][5]
    assert submitted["data"]["request"]["submitted_by"] == "local"
    assert (decided["data"]["verdict"], decided["data"]["by"], decided["data"]["via"]) == (
        "approve",
        APPROVER,
        "link",
    )
    assert decided["data"]["evidence"]["user_agent"] == "Firefox/140"
    assert decided["data"]["seal"]["count"] == 5
    assert trail["events"][4]["data"]["user_agent"] == "Mail Scanner 1.0"
    await first.app.stop()

    def forge(value: dict[str, Any]) -> dict[str, Any]:
        value["data"]["by"] = "mallory@example.com"
        return value

    edit_stored_event(data, f"{request_id}:audit.6", forge)
    second = await start_mailgate(MAILGATE_ENGINE="durable", MAILGATE_DATA_DIR=str(data))
    verification = (await second.client.get(f"/requests/{request_id}/events")).json()[
        "verification"
    ]
    assert verification["verdict"] == "tampered"
    assert verification["problems"][0] == {"seq": 6, "what": "MAC does not match its content"}
    port = second.app.http_port
    cli = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "service",
            "audit",
            "verify",
            request_id,
            "--gateway",
            f"http://127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "MAILGATE_DATA_DIR": str(tmp_path / "cli")},
    )
    assert cli.returncode == 1, cli.stderr
    assert "tampered" in cli.stdout and "event 6: MAC does not match" in cli.stdout
    everything = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "service",
            "audit",
            "verify",
            "--gateway",
            f"http://127.0.0.1:{port}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "MAILGATE_DATA_DIR": str(tmp_path / "cli")},
    )
    assert everything.returncode == 1 and "1 request(s): 1 tampered" in everything.stdout


async def test_dropping_the_newest_events_is_found_by_the_outcome_seal(
    start_mailgate, page_server: PageServer, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    request_id = await _approved_request(start_mailgate, page_server, data)
    edit_stored_event(data, f"{request_id}:audit.7", lambda value: None)
    mailgate = await start_mailgate(MAILGATE_ENGINE="durable", MAILGATE_DATA_DIR=str(data))
    trail = (await mailgate.client.get(f"/requests/{request_id}/events")).json()
    assert len(trail["events"]) == 6
    verification = trail["verification"]
    assert verification["verdict"] == "tampered"
    assert "the final outcome seals event 7: missing" in [
        p["what"] for p in verification["problems"]
    ]


async def test_export_writes_every_event_as_json_lines(start_mailgate, page_server, tmp_path):
    data = tmp_path / "data"
    request_id = await _approved_request(start_mailgate, page_server, data)
    mailgate = await start_mailgate(MAILGATE_ENGINE="durable", MAILGATE_DATA_DIR=str(data))
    exported = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "service",
            "audit",
            "export",
            "--since",
            "1h",
            "--gateway",
            f"http://127.0.0.1:{mailgate.app.http_port}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "MAILGATE_DATA_DIR": str(tmp_path / "cli")},
    )
    assert exported.returncode == 0, exported.stderr
    events = [json.loads(line) for line in exported.stdout.splitlines()]
    assert {e["request_id"] for e in events} == {request_id}
    assert [e["seq"] for e in events] == list(range(1, 8))
