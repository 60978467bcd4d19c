"""Mailgate on Postgres (resonate-pg), in one process: the whole loop, the audit trail, listings,
retention, and what a role says about a database without the schema."""

from __future__ import annotations

import time
from typing import Any

import psycopg
import pytest
from smtp_sink import free_port
from support import local, wait_for_state

from service import cli, config
from service.app import Mailgate, Roles
from service.engine.postgres import RESONATE_SQL_SHA256
from service.errors import ConfigError
from service.ledger.postgres import PostgresIndex, Retention

SECRET = "postgres-test-secret-0123456789"


def _rows(url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(sql, params).fetchall()


async def test_the_whole_loop_runs_on_postgres(start_mailgate, postgres_url, page_server):
    mailgate = await start_mailgate(MAILGATE_ENGINE=postgres_url, MAILGATE_SECRET=SECRET)
    client = mailgate.client
    url = page_server.base + "/article"

    submitted = await client.post("/requests", json={"url": url, "email": "alice@example.com"})
    assert submitted.status_code == 202, submitted.text
    request_id = submitted.json()["id"]
    again = await client.post("/requests", json={"url": url, "email": "alice@example.com"})
    assert (again.status_code, again.json()["id"]) == (200, request_id)

    first = await mailgate.notifier.wait_for(1)
    await wait_for_state(client, request_id, "waiting")
    listed = (await client.get("/requests", params={"state": "waiting"})).json()
    assert [r["id"] for r in listed["requests"]] == [request_id]

    rejected = await client.post(
        local(first.decide_url),
        json={"verdict": "reject", "reason": "Shorter, please."},
        headers={"accept": "application/json"},
    )
    assert rejected.status_code == 200, rejected.text
    await mailgate.notifier.wait_for(2)
    await wait_for_state(client, request_id, "waiting")
    decided = await client.post(
        f"/requests/{request_id}/decision", json={"verdict": "approve", "by": "ops"}
    )
    assert decided.status_code == 200, decided.text

    done = await wait_for_state(client, request_id, "approved")
    assert [(r["decision"], r["via"]) for r in done["rounds"]] == [
        ("reject", "link"),
        ("approve", "api"),
    ]
    trail = (await client.get(f"/requests/{request_id}/events")).json()
    assert trail["verification"]["verdict"] == "intact"
    kinds = [e["kind"] for e in trail["events"]]
    assert kinds[0] == "submitted" and kinds[-1] == "finished"
    assert kinds.count("decided") == 2
    assert (await client.get("/readyz")).json() == {"ready": True}
    assert (await client.get("/requests", params={"state": "approved"})).json()["requests"]
    metrics = (await client.get("/metrics")).text
    assert 'kind="index.put_event"' in metrics


async def test_a_tampered_event_is_found_on_postgres(start_mailgate, postgres_url, page_server):
    mailgate = await start_mailgate(MAILGATE_ENGINE=postgres_url, MAILGATE_SECRET=SECRET)
    body = {"url": page_server.base + "/article", "email": "alice@example.com"}
    request_id = (await mailgate.client.post("/requests", json=body)).json()["id"]
    await wait_for_state(mailgate.client, request_id, "waiting")
    with psycopg.connect(postgres_url) as conn:
        conn.execute(
            "UPDATE mailgate.events SET value = replace(value, 'alice@', 'mallory@') "
            "WHERE request_id = %s AND seq = 1",
            (request_id,),
        )
    trail = (await mailgate.client.get(f"/requests/{request_id}/events")).json()
    assert trail["verification"]["verdict"] == "tampered"


async def test_retention_deletes_finished_requests_from_both_schemas(
    start_mailgate, postgres_url, page_server
):
    mailgate = await start_mailgate(MAILGATE_ENGINE=postgres_url, MAILGATE_SECRET=SECRET)
    client = mailgate.client
    ids = []
    for n in range(2):
        url = page_server.add(f"/kept{n}", f"<p>Page {n} about tide pools and crabs.</p>")
        body = {"url": url, "email": "alice@example.com"}
        ids.append((await client.post("/requests", json=body)).json()["id"])
    finished, waiting = ids
    for request_id in ids:
        await wait_for_state(client, request_id, "waiting")
    await client.post(f"/requests/{finished}/decision", json={"verdict": "approve"})
    await wait_for_state(client, finished, "approved")
    assert _rows(postgres_url, "SELECT 1 FROM resonate.promises WHERE origin_id = %s", finished)

    ledger = mailgate.app.ledger
    assert ledger is not None and isinstance(ledger.index, PostgresIndex)
    now = int(time.time() * 1000)
    kept = Retention(ledger.index, retention_ms=60_000, clock=lambda: now)
    assert await kept.run_once() == 0, "settled a moment ago, within retention"
    later = Retention(ledger.index, retention_ms=60_000, clock=lambda: now + 120_000)
    assert await later.run_once() == 1

    for table in ("events", "requests", "claims", "notes"):
        left = _rows(
            postgres_url, f"SELECT request_id FROM mailgate.{table} WHERE request_id = %s", finished
        )
        assert left == [], table
    gone = _rows(
        postgres_url,
        "SELECT id FROM resonate.promises WHERE id = %s OR origin_id = %s OR id LIKE %s",
        finished,
        finished,
        finished + ":%",
    )
    assert gone == []
    assert (
        _rows(postgres_url, "SELECT 1 FROM resonate.tasks WHERE id LIKE %s", finished + "%") == []
    )
    assert (await client.get(f"/requests/{finished}")).status_code == 404
    assert (await client.get(f"/requests/{waiting}")).json()["state"] == "waiting"
    assert _rows(postgres_url, "SELECT 1 FROM mailgate.requests WHERE request_id = %s", waiting)


async def test_a_database_without_the_resonate_schema_stops_the_role(postgres_server):
    bare = postgres_server.url("postgres")
    settings = config.load(
        {"MAILGATE_ENGINE": bare, "MAILGATE_SECRET": SECRET, "MAILGATE_HTTP_PORT": "0"}
    )
    app = Mailgate(settings, Roles(gateway=True))
    with pytest.raises(ConfigError, match=r"resonate\.sql"):
        await app.start()
    await app.stop()


def test_postgres_and_resonate_url_together_are_refused():
    with pytest.raises(ConfigError, match="MAILGATE_ENGINE"):
        config.load(
            {
                "MAILGATE_ENGINE": "postgresql://mailgate@db/mailgate",
                "RESONATE_URL": "http://127.0.0.1:8001",
            }
        )


def test_the_password_comes_from_its_file_and_is_never_shown(tmp_path):
    secret = tmp_path / "pg-password"
    secret.write_text("s3cret/with:odd@chars\n")
    settings = config.load(
        {
            "MAILGATE_ENGINE": "postgresql://mailgate@db:5432/mailgate?sslmode=verify-full",
            "MAILGATE_ENGINE_PASSWORD_FILE": str(secret),
        }
    )
    assert not settings.embedded
    parts = psycopg.conninfo.conninfo_to_dict(settings.postgres_url())
    assert (parts["user"], parts["password"]) == ("mailgate", "s3cret/with:odd@chars")
    assert (parts["host"], parts["sslmode"]) == ("db", "verify-full")
    assert "s3cret" not in "".join(settings.masked().values())


def test_a_password_in_the_url_is_masked():
    settings = config.load({"MAILGATE_ENGINE": "postgres://mailgate:hunter2@db/mailgate"})
    shown = settings.masked()["MAILGATE_ENGINE"]
    assert shown == "postgres://mailgate:******@db/mailgate"
    assert "hunter2" not in "".join(settings.masked().values())


def test_db_check_says_what_to_run_until_both_schemas_are_there(postgres_server, capsys):
    env = {"MAILGATE_ENGINE": postgres_server.url("postgres"), "MAILGATE_LOG_LEVEL": "ERROR"}
    assert cli.main(["db", "check"], env) == 1
    out = capsys.readouterr().out
    assert "resonate-pg schema: MISSING" in out and RESONATE_SQL_SHA256 in out
    assert cli.main(["db", "migrate"], env) == 2, "refused without resonate-pg's schema"

    env["MAILGATE_ENGINE"] = postgres_server.new_database()
    assert cli.main(["db", "check"], env) == 1
    out = capsys.readouterr().out
    assert "resonate-pg schema: version 0.1.0" in out
    assert "0001_init.sql, 0002_approvers.sql not applied yet" in out
    assert "mailgate db migrate" in out
    assert cli.main(["db", "migrate"], env) == 0
    assert "applied 0001_init.sql" in capsys.readouterr().out
    assert cli.main(["db", "migrate"], env) == 0
    assert "up to date" in capsys.readouterr().out
    assert cli.main(["db", "check"], env) == 0
    assert "mailgate schema: up to date (migrations 1, 2)" in capsys.readouterr().out
    assert cli.main(["healthcheck", "--role", "worker"], env) == 0


def test_db_check_without_postgres_says_so(capsys):
    assert cli.main(["db", "check"], {"MAILGATE_ENGINE": "memory"}) == 2
    assert "MAILGATE_ENGINE=postgresql://" in capsys.readouterr().err


def test_an_unreachable_database_is_reported(capsys):
    env = {"MAILGATE_ENGINE": f"postgresql://mailgate@127.0.0.1:{free_port()}/mailgate"}
    assert cli.main(["db", "check"], env) == 1
    assert "cannot reach postgresql://mailgate@127.0.0.1" in capsys.readouterr().err
    assert cli.main(["healthcheck", "--role", "worker"], env) == 1


async def test_several_approvers_delegation_and_a_deadline_on_postgres(
    start_listener, postgres_url, page_server, tmp_path
):
    """Votes, a delegate's job, and the deadline watcher's timers all run on resonate-pg."""
    from dkim_keys import write_key
    from test_approvers import answers, click, link_of, mail_to

    mailgate, sink = await start_listener(
        MAILGATE_ENGINE=postgres_url,
        MAILGATE_SECRET=SECRET,
        MAILGATE_REMIND_AFTER="0",
        MAILGATE_DKIM_KEY_FILE=str(write_key(tmp_path)),
    )
    people = ["ann@example.com", "ben@example.com"]
    body = {"url": page_server.base + "/article", "approvers": people, "policy": "all"}
    request_id = (await mailgate.client.post("/requests", json=body)).json()["id"]
    handed = await mailgate.client.post(
        link_of(await mail_to(sink, people[1])) + "/delegate", data={"to": "dave@example.com"}
    )
    assert handed.status_code == 200, handed.text
    await click(mailgate, await mail_to(sink, people[0]), "approve")
    await click(mailgate, await mail_to(sink, "dave@example.com"), "approve")
    done = await wait_for_state(mailgate.client, request_id, "approved")
    assert answers(done) == {
        people[0]: "approved",
        people[1]: "delegated",
        "dave@example.com": "approved",
    }
    page_server.add("/late", "<p>A page nobody will answer about in time.</p>")
    late = {"url": page_server.base + "/late", "email": people[0], "expires_in": "2s"}
    late_id = (await mailgate.client.post("/requests", json=late)).json()["id"]
    expired = await wait_for_state(mailgate.client, late_id, "expired", timeout=30)
    assert expired["rounds"][0]["via"] == "expiry"
