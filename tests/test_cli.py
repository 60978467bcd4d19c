"""The `mailgate` command as a user runs it: real subprocesses against a real `mailgate serve`."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from dkim_keys import private_key, write_key
from processes import ROOT, Process, clean_env, serve_env
from smtp_sink import free_port
from support import REPLY_DOMAIN, wait_for_state

from service.mail import spamcheck
from service.mail.signing import DkimSigner, public_key_base64, read_key

pytestmark = pytest.mark.slow


def mailgate(
    *args: str, env: dict[str, str], timeout: float = 60, cwd: Path = ROOT
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _serve_env(tmp_path: Path, port: int, **values: str) -> dict[str, str]:
    """`mailgate serve` that needs neither Ollama nor a mail server: extractive summaries, and
    asks printed to its log."""
    return serve_env(
        tmp_path, port, MAILGATE_SUMMARIZER="extractive", MAILGATE_NOTIFIER="console", **values
    )


def test_bad_configuration_exits_2_naming_the_variable(tmp_path: Path):
    result = mailgate("serve", env=clean_env(MAILGATE_DECISION_TTL="soon"))
    assert result.returncode == 2
    assert "MAILGATE_DECISION_TTL" in result.stderr


def test_non_loopback_bind_needs_an_api_token(tmp_path: Path):
    env = clean_env(MAILGATE_HTTP_HOST="0.0.0.0", MAILGATE_DATA_DIR=str(tmp_path))
    result = mailgate("serve", env=env)
    assert result.returncode == 2
    assert "MAILGATE_API_TOKEN" in result.stderr


def test_split_roles_need_resonate_url_and_secret(tmp_path: Path):
    assert "RESONATE_URL" in mailgate("worker", env=clean_env()).stderr
    result = mailgate("gateway", env=clean_env(RESONATE_URL="http://127.0.0.1:9"))
    assert result.returncode == 2
    assert "MAILGATE_SECRET" in result.stderr


@pytest.mark.parametrize("role", ["worker", "inbox"])
def test_split_roles_that_send_mail_need_the_shared_dkim_key(tmp_path: Path, role: str):
    env = clean_env(
        RESONATE_URL="http://127.0.0.1:9",
        MAILGATE_SECRET="split-secret-shared-by-every-role",
        MAILGATE_REPLY_DOMAIN="mailgate.test",
        MAILGATE_DATA_DIR=str(tmp_path),
    )
    result = mailgate(role, env=env)
    assert result.returncode == 2
    assert "MAILGATE_DKIM_KEY_FILE is required with a shared engine" in result.stderr
    assert list(tmp_path.iterdir()) == [], "no key of its own is made"


def test_dkim_dns_prints_the_record_of_the_key_that_signs(tmp_path: Path):
    env = clean_env(
        MAILGATE_DATA_DIR=str(tmp_path / "data"), MAILGATE_FROM="Mailgate <m@mail.example.org>"
    )
    first = mailgate("dkim", "dns", env=env)
    again = mailgate("dkim", "dns", env=env)
    key = read_key(tmp_path / "data" / "dkim.pem")
    given = mailgate("dkim", "dns", env={**env, "MAILGATE_DKIM_KEY_FILE": str(write_key(tmp_path))})

    assert first.returncode == 0, first.stderr
    assert first.stdout == again.stdout
    record = DkimSigner("mail.example.org", "mailgate", key).dns_record()
    assert f"; value: {record.value}\n" in first.stdout
    assert record.zone_line() in first.stdout
    assert first.stdout.splitlines()[-1].startswith("mailgate._domainkey.mail.example.org. IN TXT")
    assert f"p={public_key_base64(private_key())}" in given.stdout


def test_split_roles_refuse_a_secret_shorter_than_a_generated_one():
    result = mailgate(
        "worker", env=clean_env(RESONATE_URL="http://127.0.0.1:9", MAILGATE_SECRET="x")
    )
    assert result.returncode == 2
    assert "MAILGATE_SECRET" in result.stderr and "at least 16" in result.stderr


def test_status_is_not_stopped_by_a_bad_smtp_port():
    env = clean_env(MAILGATE_SMTP_PORT="smtp", MAILGATE_HTTP_PORT=str(free_port()))
    status = mailgate("status", env=env)
    assert "cannot reach the gateway" in status.stderr
    assert "MAILGATE_SMTP_PORT" not in status.stderr
    served = mailgate("serve", env=env)
    assert served.returncode == 2 and "MAILGATE_SMTP_PORT" in served.stderr


def test_config_check_masks_secrets():
    result = mailgate(
        "config-check", env=clean_env(MAILGATE_SECRET="s3cret-value", MAILGATE_SMTP_PASSWORD="pw1")
    )
    assert result.returncode == 0
    assert "MAILGATE_SECRET=******" in result.stdout
    assert "s3cret-value" not in result.stdout and "pw1" not in result.stdout
    assert "MAILGATE_HTTP_PORT=9000" in result.stdout
    assert "MAILGATE_DECISION_TTL=7d" in result.stdout


async def test_submit_wait_status_decide_against_serve(tmp_path: Path, page_server):
    port = free_port()
    env = _serve_env(tmp_path, port, MAILGATE_API_TOKEN="tok")
    serve = Process("serve", env, tmp_path / "serve.log")
    serve.start()
    base = f"http://127.0.0.1:{port}"
    try:
        await serve.wait_http(base + "/healthz")
        second = mailgate("serve", env=env)
        assert second.returncode != 0
        assert "lock" in (second.stderr + second.stdout).lower()

        waiter = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "service",
            "submit",
            page_server.base + "/article",
            "--to",
            "alice@example.com",
            "--wait",
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        request_id = (await waiter.stdout.readline()).decode().strip()
        assert request_id.startswith("mg-")
        async with httpx.AsyncClient(
            base_url=base, headers={"authorization": "Bearer tok"}
        ) as client:
            await wait_for_state(client, request_id, "waiting")
        assert "/decide/" in serve.output()

        status = await asyncio.to_thread(mailgate, "status", request_id, env=env)
        assert "waiting" in status.stdout
        decided = await asyncio.to_thread(
            mailgate, "decide", request_id, "approve", "--reason", "fine", env=env
        )
        assert decided.returncode == 0, decided.stderr
        out, err = await asyncio.wait_for(waiter.communicate(), 30)
        assert waiter.returncode == 0, err
        assert "approved" in out.decode()
        again = await asyncio.to_thread(mailgate, "decide", request_id, "reject", env=env)
        assert again.returncode == 1 and "approved" in again.stderr
        unauthorized = await asyncio.to_thread(
            mailgate, "status", env={**env, "MAILGATE_API_TOKEN": "wrong"}
        )
        assert unauthorized.returncode == 1
        verified = await asyncio.to_thread(mailgate, "audit", "verify", env=env)
        assert verified.returncode == 0, verified.stderr
        assert "1 request(s): 1 intact" in verified.stdout
        refused = await asyncio.to_thread(
            mailgate, "audit", "verify", env={**env, "MAILGATE_API_TOKEN": "wrong"}
        )
        assert refused.returncode == 1
        assert refused.stderr.startswith("mailgate: ") and "Traceback" not in refused.stderr
    finally:
        assert serve.terminate() == 0


def test_commands_that_only_read_create_no_data_dir(tmp_path: Path):
    home, cwd = tmp_path / "home", tmp_path / "elsewhere"
    cwd.mkdir()
    env = clean_env(
        HOME=str(home),
        XDG_DATA_HOME=str(home / "data"),
        MAILGATE_HTTP_PORT=str(free_port()),
        MAILGATE_REPLY_DOMAIN=REPLY_DOMAIN,
    )
    assert mailgate("config-check", env=env, cwd=cwd).returncode == 0
    assert "cannot reach the gateway" in mailgate("status", env=env, cwd=cwd).stderr
    replied = mailgate("reply-test", "mg-0123", "yes", env=env, cwd=cwd)
    assert replied.returncode == 2
    assert f"data dir {home / 'data' / 'mailgate'} (the default" in replied.stderr
    assert f"no signing secret at {home / 'data' / 'mailgate' / 'secret'}" in replied.stderr
    assert list(cwd.iterdir()) == [] and not home.exists()


def test_an_existing_dot_mailgate_is_used_and_named(tmp_path: Path):
    project = tmp_path / "project"
    (project / ".mailgate").mkdir(parents=True)
    (project / ".mailgate" / "secret").write_text("a-secret-written-by-release-0.1\n")
    env = clean_env(
        HOME=str(tmp_path / "home"),
        MAILGATE_HTTP_PORT=str(free_port()),
        MAILGATE_REPLY_DOMAIN=REPLY_DOMAIN,
    )
    replied = mailgate("reply-test", "mg-0123", "yes", env=env, cwd=project)
    assert f"data dir {project / '.mailgate'} (an existing ./.mailgate here" in replied.stderr
    assert "cannot reach the gateway" in replied.stderr
    assert not (tmp_path / "home").exists()


async def test_reply_test_plays_the_approver(tmp_path: Path, page_server):
    port, inbound = free_port(), free_port()
    env = _serve_env(
        tmp_path, port, MAILGATE_INBOUND_PORT=str(inbound), MAILGATE_REPLY_DOMAIN=REPLY_DOMAIN
    )
    serve = Process("serve", env, tmp_path / "serve.log")
    serve.start()
    base = f"http://127.0.0.1:{port}"
    try:
        await serve.wait_http(base + "/healthz")
        submitted = await asyncio.to_thread(
            mailgate, "submit", page_server.base + "/article", "--to", "alice@example.com", env=env
        )
        request_id = submitted.stdout.strip()
        assert f"data dir {tmp_path / 'data'} (MAILGATE_DATA_DIR)" in serve.output()
        assert f"signing with the secret in {tmp_path / 'data' / 'secret'}" in serve.output()
        other = tmp_path / "other"
        other.mkdir()
        (other / "secret").write_text("a-secret-serve-never-saw-0123456789\n")
        async with httpx.AsyncClient(base_url=base) as client:
            await _wait_rounds(client, request_id, 1)
            stray = await asyncio.to_thread(
                mailgate,
                "reply-test",
                request_id,
                "no",
                env={**env, "MAILGATE_DATA_DIR": str(other)},
                cwd=tmp_path,
            )
            assert stray.returncode == 1
            assert f"signed with the secret in {other / 'secret'}" in stray.stderr
            no = await asyncio.to_thread(
                mailgate,
                "reply-test",
                request_id,
                "no",
                "Mention the crabs.",
                env=env,
                cwd=tmp_path,
            )
            assert no.returncode == 0, no.stderr
            await _wait_rounds(client, request_id, 2)
            yes = await asyncio.to_thread(mailgate, "reply-test", request_id, "yes", env=env)
            assert yes.returncode == 0, yes.stderr
            view = await wait_for_state(client, request_id, "approved")
        assert [(r["decision"], r["via"]) for r in view["rounds"]] == [
            ("reject", "reply"),
            ("approve", "reply"),
        ]
        assert view["rounds"][0]["reason"] == "Mention the crabs."
        late = await asyncio.to_thread(mailgate, "reply-test", request_id, "no", env=env)
        assert late.returncode == 1 and "approved" in late.stderr
    finally:
        serve.terminate()


async def test_reply_test_without_a_listener_says_how_to_start_one(tmp_path: Path, page_server):
    port = free_port()
    env = _serve_env(tmp_path, port, MAILGATE_INBOUND_PORT=str(free_port()))
    serve = Process("serve", env, tmp_path / "serve.log")
    serve.start()
    try:
        await serve.wait_http(f"http://127.0.0.1:{port}/healthz")
        submitted = await asyncio.to_thread(
            mailgate, "submit", page_server.base + "/article", "--to", "alice@example.com", env=env
        )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            await _wait_rounds(client, submitted.stdout.strip(), 1)
        reply = await asyncio.to_thread(
            mailgate,
            "reply-test",
            submitted.stdout.strip(),
            "yes",
            env={**env, "MAILGATE_REPLY_DOMAIN": REPLY_DOMAIN},
        )
    finally:
        serve.terminate()
    assert reply.returncode == 1
    assert f"restart serve with MAILGATE_REPLY_DOMAIN={REPLY_DOMAIN}" in reply.stderr


async def _wait_rounds(client: httpx.AsyncClient, request_id: str, count: int) -> None:
    async with asyncio.timeout(30):
        while True:
            view = (await client.get(f"/requests/{request_id}")).json()
            if view["state"] == "waiting" and len(view["rounds"]) == count:
                return
            await asyncio.sleep(0.1)


async def test_split_role_waits_for_the_engine(tmp_path: Path):
    engine_port, http_port = free_port(), free_port()
    env = clean_env(
        RESONATE_URL=f"http://127.0.0.1:{engine_port}",
        MAILGATE_SECRET="waits-for-the-engine-secret",
        MAILGATE_HTTP_PORT=str(http_port),
        MAILGATE_ENGINE_PORT=str(engine_port),
        MAILGATE_DATA_DIR=str(tmp_path / "engine"),
    )
    gateway = Process("gateway", env, tmp_path / "gateway.log")
    engine = Process("engine", env, tmp_path / "engine.log")
    gateway.start()
    try:
        async with asyncio.timeout(20):
            while "waiting for the engine" not in gateway.output():
                await asyncio.sleep(0.1)
        engine.start()
        await gateway.wait_http(f"http://127.0.0.1:{http_port}/readyz", timeout=30)
        assert "is reachable" in gateway.output()
    finally:
        assert gateway.terminate() == 0
        assert engine.terminate() == 0


async def test_mail_test_sends_a_sample_through_the_configured_server(tmp_path: Path, start_sink):
    sink = await start_sink()
    env = clean_env(
        MAILGATE_SMTP_PORT=str(sink.port),
        MAILGATE_FROM="Mailgate <m@mailgate.test>",
        MAILGATE_REPLY_DOMAIN=REPLY_DOMAIN,
        HOME=str(tmp_path / "home"),
        XDG_DATA_HOME="",
    )
    sent = await asyncio.to_thread(
        mailgate, "mail-test", "--to", "ops@example.com", env=env, cwd=tmp_path
    )
    assert sent.returncode == 0, sent.stderr
    assert await asyncio.to_thread(os.listdir, tmp_path) == [], "mail-test made a data dir"
    assert sink.received[0].message["To"] == "ops@example.com"
    if spamcheck.spamassassin() is None:
        assert "SpamAssassin is not installed" in sent.stdout
    else:
        score = re.search(r"SpamAssassin \(local rules\): (-?[\d.]+) points", sent.stdout)
        assert score is not None and float(score.group(1)) <= 0.5, sent.stdout
        assert "NO_RELAYS" in sent.stdout, "the rules that fired are listed"
    broken = tmp_path / "bin" / "spamassassin"
    broken.parent.mkdir()
    broken.write_text("#!/bin/sh\necho 'config: cannot open rules' >&2\nexit 2\n")
    broken.chmod(0o755)
    path = f"{broken.parent}:{env.get('PATH', '')}"
    unscored = await asyncio.to_thread(
        mailgate, "mail-test", "--to", "ops@example.com", env={**env, "PATH": path}
    )
    assert unscored.returncode == 0, "the email was sent"
    assert "SpamAssassin could not score it" in unscored.stdout
    assert "config: cannot open rules" in unscored.stdout
    down = await asyncio.to_thread(
        mailgate,
        "mail-test",
        "--to",
        "ops@example.com",
        env={**env, "MAILGATE_SMTP_PORT": str(free_port())},
    )
    assert down.returncode == 1 and "NOT sent" in down.stderr
