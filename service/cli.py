"""The ``mailgate`` command: one subcommand per role or operator task, no logic of its own."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets as pysecrets
import signal
import subprocess
import sys
import time
from collections.abc import Coroutine, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosmtplib
import httpx

from service import config, health, logs
from service.app import (
    LOOPBACK,
    Mailgate,
    Roles,
    check_bind,
    check_database,
    dkim_signer_for,
    migrate_database,
    secret_source,
    secrets_for,
    smtp_settings,
)
from service.errors import ConfigError, Permanent
from service.gateway.context import CLIENT_HEADER

logger = logging.getLogger("mailgate")

EXIT_CONFIG = 2

# What each operator command reads, so that a bad value elsewhere does not stop it; the roles
# and config-check read everything.
LOGGING = frozenset({"MAILGATE_LOG_LEVEL", "MAILGATE_LOG_FORMAT"})
ENGINE = frozenset({"RESONATE_URL", "MAILGATE_ENGINE", "MAILGATE_ENGINE_PASSWORD_FILE"})
SIGNING = frozenset({"MAILGATE_SECRET", "MAILGATE_DATA_DIR"}) | ENGINE
GATEWAY_CLIENT = LOGGING | {
    "MAILGATE_HTTP_HOST",
    "MAILGATE_HTTP_PORT",
    "MAILGATE_API_TOKEN",
    "MAILGATE_API_TOKENS",
}
REPLYING = (
    GATEWAY_CLIENT
    | SIGNING
    | frozenset(
        {"MAILGATE_REPLY_DOMAIN", "MAILGATE_FROM", "MAILGATE_INBOUND_HOST", "MAILGATE_INBOUND_PORT"}
    )
)
MAILING = (
    LOGGING
    | SIGNING
    | frozenset(
        {
            "MAILGATE_FROM",
            "MAILGATE_REPLY_DOMAIN",
            "MAILGATE_PUBLIC_URL",
            "MAILGATE_SMTP_HOST",
            "MAILGATE_SMTP_PORT",
            "MAILGATE_SMTP_TLS",
            "MAILGATE_SMTP_USER",
            "MAILGATE_SMTP_PASSWORD",
            "MAILGATE_SMTP_TIMEOUT",
            "MAILGATE_SMTP_CA_FILE",
        }
    )
)
DATABASE = LOGGING | ENGINE
PROBING = (
    LOGGING
    | ENGINE
    | frozenset(
        {
            "MAILGATE_HTTP_HOST",
            "MAILGATE_HTTP_PORT",
            "MAILGATE_INBOUND_HOST",
            "MAILGATE_INBOUND_PORT",
            "MAILGATE_ENGINE_HOST",
            "MAILGATE_ENGINE_PORT",
        }
    )
)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    args = _parser().parse_args(argv)
    data_dir, why = config.data_dir(env, Path.cwd())
    try:
        settings = config.load({**env, config.DATA_DIR: str(data_dir)}, needs=args.needs)
    except ConfigError as exc:
        print(f"mailgate: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    logs.configure(settings.log_level, settings.log_format)
    if args.uses_data_dir:
        logger.info("data dir %s (%s)", data_dir, why)
    try:
        return args.run(args, settings)
    except ConfigError as exc:
        print(f"mailgate: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mailgate", description=__doc__)
    parser.set_defaults(needs=None, uses_data_dir=False)
    sub = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = sub.add_parser("serve", help="engine, worker and gateway in one process")
    serve.set_defaults(uses_data_dir=True, run=_serve)
    shared = "needs RESONATE_URL or a Postgres MAILGATE_ENGINE"
    worker = sub.add_parser("worker", help=f"run workflows ({shared})")
    worker.set_defaults(uses_data_dir=True, run=_worker)
    gateway = sub.add_parser("gateway", help=f"HTTP gateway only ({shared})")
    gateway.set_defaults(run=_gateway)
    inbox = sub.add_parser("inbox", help=f"reply listener only ({shared})")
    inbox.set_defaults(run=_inbox)
    engine = sub.add_parser("engine", help="serve the durable engine over the Resonate protocol")
    engine.set_defaults(uses_data_dir=True, run=_engine)

    submit = sub.add_parser("submit", help="ask someone to approve a summary of URL")
    submit.add_argument("url")
    submit.add_argument(
        "--to",
        required=True,
        action="append",
        metavar="EMAIL",
        help="an approver (repeat for several)",
    )
    submit.add_argument(
        "--policy", metavar="any|all|N", help="how several approvers decide (default: any)"
    )
    submit.add_argument(
        "--escalate-to", action="append", metavar="EMAIL", help="also offer a waiting round to"
    )
    submit.add_argument(
        "--escalate-after", metavar="DURATION", help="when (default: at the first reminder)"
    )
    submit.add_argument("--callback", metavar="URL", help="POST the outcome here")
    submit.add_argument("--repeat", action="store_true", help="start afresh if finished")
    submit.add_argument("--wait", action="store_true", help="block until it ends")
    submit.add_argument(
        "--expires-in",
        metavar="DURATION",
        help="each round's deadline (default MAILGATE_DECISION_TTL)",
    )
    submit.add_argument(
        "--on-expiry",
        choices=["expire", "reject", "approve"],
        help="what a passed deadline means (default: expire)",
    )
    _gateway_option(submit)
    submit.set_defaults(needs=GATEWAY_CLIENT, run=_submit)

    reassign = sub.add_parser("reassign", help="hand an approver's place to someone else")
    reassign.add_argument("id")
    reassign.add_argument("giver", metavar="FROM")
    reassign.add_argument("to", metavar="TO")
    _gateway_option(reassign)
    reassign.set_defaults(needs=GATEWAY_CLIENT, run=_reassign)

    cancel = sub.add_parser("cancel", help="cancel a request that has not ended")
    cancel.add_argument("id")
    cancel.add_argument("--reason")
    _gateway_option(cancel)
    cancel.set_defaults(needs=GATEWAY_CLIENT, run=_cancel)

    status = sub.add_parser("status", help="show one request, or list them")
    status.add_argument("id", nargs="?")
    _gateway_option(status)
    status.set_defaults(needs=GATEWAY_CLIENT, run=_status)

    decide = sub.add_parser("decide", help="decide the waiting round as an operator")
    decide.add_argument("id")
    decide.add_argument("verdict", choices=["approve", "reject"])
    decide.add_argument("--reason")
    decide.add_argument("--by", default="operator")
    _gateway_option(decide)
    decide.set_defaults(needs=GATEWAY_CLIENT, run=_decide)

    reply_test = sub.add_parser(
        "reply-test", help="reply to a waiting request as its approver would, by SMTP"
    )
    reply_test.add_argument("id")
    reply_test.add_argument("answer", choices=["yes", "no"])
    reply_test.add_argument("reason", nargs="?", default="")
    _gateway_option(reply_test)
    reply_test.set_defaults(uses_data_dir=True, needs=REPLYING, run=_reply_test)

    audit = sub.add_parser("audit", help="check or export the audit trail")
    audit_sub = audit.add_subparsers(required=True, metavar="ACTION")
    verify = audit_sub.add_parser("verify", help="check one request's trail, or every one")
    verify.add_argument("id", nargs="?")
    _gateway_option(verify)
    verify.set_defaults(run=_audit_verify)
    export = audit_sub.add_parser("export", help="write every event as JSON lines")
    export.add_argument(
        "--since", metavar="WHEN", help="only events since: a duration ago (7d) or a date (ISO)"
    )
    _gateway_option(export)
    export.set_defaults(run=_audit_export)

    mail_test = sub.add_parser("mail-test", help="send a sample request email")
    mail_test.add_argument("--to", required=True, metavar="ADDRESS")
    mail_test.set_defaults(uses_data_dir=True, needs=MAILING, run=_mail_test)

    dkim = sub.add_parser("dkim", help="the DKIM key that signs outgoing mail")
    dkim_sub = dkim.add_subparsers(required=True, metavar="ACTION")
    dkim_dns = dkim_sub.add_parser("dns", help="print the DNS TXT record to publish")
    dkim_dns.set_defaults(run=_dkim_dns)

    db = sub.add_parser(
        "db", help="the Postgres engine's database (MAILGATE_ENGINE=postgresql://…)"
    )
    db_sub = db.add_subparsers(required=True, metavar="ACTION")
    db_check = db_sub.add_parser("check", help="is resonate-pg's schema there, and Mailgate's?")
    db_check.set_defaults(needs=DATABASE, run=_db_check)
    db_migrate = db_sub.add_parser("migrate", help="create or update Mailgate's own tables")
    db_migrate.set_defaults(needs=DATABASE, run=_db_migrate)

    health = sub.add_parser("healthcheck", help="exit 0 when this container's role is healthy")
    health.add_argument(
        "--role", choices=["serve", "gateway", "worker", "inbox", "engine"], default="serve"
    )
    health.set_defaults(needs=PROBING, run=_healthcheck)

    check = sub.add_parser("config-check", help="print the effective configuration")
    check.set_defaults(run=_config_check)
    return parser


def _gateway_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gateway", metavar="URL", help="gateway URL (default: from settings)")


# ── roles ──────────────────────────────────────────────────────────────────


def _serve(args: argparse.Namespace, settings: config.Settings) -> int:
    check_bind(settings)
    return _run_until_signal(Mailgate(settings, Roles(worker=True, gateway=True, inbox=True)))


def _worker(args: argparse.Namespace, settings: config.Settings) -> int:
    _require_remote(settings, "worker")
    return _run_until_signal(Mailgate(settings, Roles(worker=True)))


def _gateway(args: argparse.Namespace, settings: config.Settings) -> int:
    _require_remote(settings, "gateway")
    check_bind(settings)
    return _run_until_signal(Mailgate(settings, Roles(gateway=True)))


def _inbox(args: argparse.Namespace, settings: config.Settings) -> int:
    _require_remote(settings, "inbox")
    if settings.reply_domain is None:
        msg = (
            "`mailgate inbox` needs MAILGATE_REPLY_DOMAIN (the domain of reply+<token>@ addresses)"
        )
        raise ConfigError(msg)
    return _run_until_signal(Mailgate(settings, Roles(inbox=True)))


def _engine(args: argparse.Namespace, settings: config.Settings) -> int:
    from service import engine

    if settings.engine_host not in LOOPBACK and not settings.engine_token:
        msg = (
            f"refusing to serve the engine on MAILGATE_ENGINE_HOST={settings.engine_host} without "
            "MAILGATE_ENGINE_TOKEN: anyone who reaches it could settle a round"
        )
        raise ConfigError(msg)

    async def run() -> None:
        conn = engine.open_durable(
            settings.data_dir / "engine",
            pid="engine",
            group="engine",
            synchronous=settings.engine_synchronous,
            retention_ms=int(settings.retention * 1000),
        )
        stop = _stop_event()
        try:
            if await _unless_stopped(conn.start(), stop):
                await engine.serve_engine(
                    conn,
                    settings.engine_host,
                    settings.engine_port,
                    stop,
                    token=settings.engine_token,
                )
        finally:
            await conn.stop()

    asyncio.run(run())
    return 0


def _require_remote(settings: config.Settings, role: str) -> None:
    if settings.embedded:
        msg = (
            f"`mailgate {role}` runs beside other processes and needs a shared engine: "
            "MAILGATE_ENGINE=postgresql://… (Postgres with resonate-pg's schema) or RESONATE_URL "
            "(e.g. http://127.0.0.1:8001 with `mailgate engine`); use `mailgate serve` "
            "to run everything in one process"
        )
        raise ConfigError(msg)
    secrets_for(settings)
    if role != "gateway":  # the roles that send mail sign it
        dkim_signer_for(settings)


def _stop_event() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def _unless_stopped(starting: Coroutine[Any, Any, None], stop: asyncio.Event) -> bool:
    """Run ``starting`` unless ``stop`` is set first, in which case cancel it and say False.

    Start-up may wait a long time (for an engine that is not up yet, a mail server that does
    not answer), and a signal must end the process within a second in any phase of it.
    """
    work = asyncio.create_task(starting)
    stopped = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait({work, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not work.done():
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await work
    if work.cancelled():
        return False
    work.result()
    return True


def _run_until_signal(app: Mailgate) -> int:
    async def run() -> None:
        stop = _stop_event()
        try:
            if await _unless_stopped(app.start(), stop):
                logger.info("mailgate ready (pid %d)", os.getpid())
                await stop.wait()
            logger.info("shutting down")
        finally:
            await app.stop()

    asyncio.run(run())
    return 0


# ── operator commands (talk to the gateway over HTTP) ─────────────────────


def _client(args: argparse.Namespace, settings: config.Settings) -> httpx.Client:
    host = settings.http_host if settings.http_host not in ("0.0.0.0", "::") else "127.0.0.1"  # noqa: S104
    base = args.gateway or f"http://{host}:{settings.http_port}"
    headers = {"accept": "application/json", CLIENT_HEADER: "cli"}
    if settings.client_token:
        headers["authorization"] = f"Bearer {settings.client_token}"
    return httpx.Client(base_url=base, headers=headers, timeout=30)


def _call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    try:
        return client.request(method, path, **kwargs)
    except httpx.TransportError as exc:
        msg = f"cannot reach the gateway at {client.base_url} ({exc}); is `mailgate serve` running?"
        raise ConfigError(msg) from None


#: ``submit --wait`` exits with the request's end (2 is taken by configuration errors).
WAIT_EXIT = {"approved": 0, "failed": 1, "rejected": 3, "expired": 4, "cancelled": 5}


def _submit(args: argparse.Namespace, settings: config.Settings) -> int:
    body: dict[str, Any] = {"url": args.url, "repeat": args.repeat}
    if len(args.to) == 1:
        body["email"] = args.to[0]
    else:
        body["approvers"] = args.to
    if args.policy:
        body["policy"] = {"min": int(args.policy)} if args.policy.isdigit() else args.policy
    if args.escalate_to:
        body["escalate_to"] = args.escalate_to
    if args.escalate_after:
        body["escalate_after"] = args.escalate_after
    if args.callback:
        body["callback_url"] = args.callback
    if args.expires_in:
        body["expires_in"] = args.expires_in
    if args.on_expiry:
        body["on_expiry"] = args.on_expiry
    with _client(args, settings) as client:
        response = _call(client, "POST", "/requests", json=body)
        if response.status_code not in (200, 202):
            print(f"mailgate: {_error(response)}", file=sys.stderr)
            return 1
        request_id = response.json()["id"]
        print(request_id if response.status_code == 202 else f"{request_id} (already known)")
        if not args.wait:
            return 0
        while True:
            state = _call(client, "GET", f"/requests/{request_id}").json()
            if state["state"] in WAIT_EXIT:
                _print_view(state)
                return WAIT_EXIT[state["state"]]
            time.sleep(1)


def _reassign(args: argparse.Namespace, settings: config.Settings) -> int:
    body = {"from": args.giver, "to": args.to}
    with _client(args, settings) as client:
        response = _call(client, "POST", f"/requests/{args.id}/reassign", json=body)
    if response.status_code != 200:
        print(f"mailgate: {_error(response)}", file=sys.stderr)
        return 1
    print(f"{args.id}: {args.giver} handed over to {args.to}")
    return 0


def _cancel(args: argparse.Namespace, settings: config.Settings) -> int:
    with _client(args, settings) as client:
        response = _call(client, "DELETE", f"/requests/{args.id}", json={"reason": args.reason})
    if response.status_code != 202:
        print(f"mailgate: {_error(response)}", file=sys.stderr)
        return 1
    print(f"{args.id}: cancelling")
    return 0


def _status(args: argparse.Namespace, settings: config.Settings) -> int:
    with _client(args, settings) as client:
        path = f"/requests/{args.id}" if args.id else "/requests"
        response = _call(client, "GET", path)
    if response.status_code != 200:
        print(f"mailgate: {_error(response)}", file=sys.stderr)
        return 1
    body = response.json()
    for view in body.get("requests", [body]):
        _print_view(view)
    return 0


def _decide(args: argparse.Namespace, settings: config.Settings) -> int:
    body = {"verdict": args.verdict, "reason": args.reason, "by": args.by}
    with _client(args, settings) as client:
        response = _call(client, "POST", f"/requests/{args.id}/decision", json=body)
    if response.status_code != 200:
        print(f"mailgate: {_error(response)}", file=sys.stderr)
        return 1
    print(f"{args.id}: {args.verdict} recorded")
    return 0


EXIT_TAMPERED = 1
EXIT_UNVERIFIABLE = 3


def _audit_verify(args: argparse.Namespace, settings: config.Settings) -> int:
    """Exit 0 when every trail checked is intact, 1 when any was tampered with, 3 when some
    could only be partly checked (events signed with a key no longer configured)."""
    path = f"/requests/{args.id}/events" if args.id else "/audit/verify"
    with _client(args, settings) as client:
        response = _call(client, "GET", path)
    if response.status_code != 200:
        print(f"mailgate: {_error(response)}", file=sys.stderr)
        return 1
    if args.id:
        results = [response.json()["verification"]]
    else:
        results = [json.loads(line) for line in response.text.splitlines() if line]
    for result in results:
        print(f"{result['request_id']}  {result['verdict']:<12}  {result['events']} events")
        for problem in result["problems"]:
            print(f"    event {problem['seq']}: {problem['what']}")
    verdicts = {r["verdict"] for r in results}
    if not args.id:
        counts = ", ".join(
            f"{sum(r['verdict'] == v for r in results)} {v}" for v in sorted(verdicts)
        )
        print(f"{len(results)} request(s): {counts or 'nothing to check'}")
    if "tampered" in verdicts:
        return EXIT_TAMPERED
    return EXIT_UNVERIFIABLE if "unverifiable" in verdicts else 0


def _audit_export(args: argparse.Namespace, settings: config.Settings) -> int:
    since = _since(args.since) if args.since else 0
    with _client(args, settings) as client:
        try:
            with client.stream("GET", "/audit/events", params={"since": since}) as response:
                if response.status_code != 200:
                    response.read()
                    print(f"mailgate: {_error(response)}", file=sys.stderr)
                    return 1
                for line in response.iter_lines():
                    if line:
                        print(line)
        except httpx.TransportError as exc:
            msg = f"cannot reach the gateway at {client.base_url} ({exc})"
            raise ConfigError(msg) from None
    return 0


def _since(text: str) -> int:
    """Epoch milliseconds from ``7d`` (that long ago) or an ISO date or time (UTC if no zone)."""
    try:
        return int((time.time() - config.parse_duration(text)) * 1000)
    except ValueError:
        pass
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        msg = f"--since {text!r}: give a duration like 7d or a date like 2026-12-01"
        raise ConfigError(msg) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def _reply_test(args: argparse.Namespace, settings: config.Settings) -> int:
    """MailHog cannot reply, so this plays the approver's mail client against the listener."""
    from service.mail.approver_reply import compose_reply

    if settings.reply_domain is None:
        raise ConfigError("reply-test needs MAILGATE_REPLY_DOMAIN (replies go to reply+<token>@it)")
    keys = secrets_for(settings, create=False)
    with _client(args, settings) as client:
        response = _call(client, "GET", f"/requests/{args.id}")
    if response.status_code != 200:
        print(f"mailgate: {_error(response)}", file=sys.stderr)
        return 1
    view = response.json()
    waiting = [r for r in view["rounds"] if r["decision"] is None and r["round_id"]]
    if view["state"] != "waiting" or not waiting:
        print(f"mailgate: {args.id} is {view['state']}, not waiting for a reply", file=sys.stderr)
        return 1
    message = compose_reply(
        view,
        waiting[-1],
        answer=f"{args.answer.capitalize()}. {args.reason}".strip(),
        secrets=keys,
        reply_domain=settings.reply_domain,
        our_sender=settings.mail_from,
        now=datetime.now(UTC),
    )
    host = health.local_host(settings.inbound_host)

    async def send() -> None:
        await aiosmtplib.send(message, hostname=host, port=settings.inbound_port)

    try:
        asyncio.run(send())
    except aiosmtplib.SMTPConnectError as exc:
        print(
            f"mailgate: no reply listener answers at {host}:{settings.inbound_port} ({exc}). "
            "`mailgate serve` starts it only when MAILGATE_REPLY_DOMAIN is set: restart serve "
            f"with MAILGATE_REPLY_DOMAIN={settings.reply_domain} (and the same "
            "MAILGATE_INBOUND_HOST/MAILGATE_INBOUND_PORT as here)",
            file=sys.stderr,
        )
        return 1
    except aiosmtplib.SMTPRecipientsRefused as exc:
        print(
            f"mailgate: the listener refused the reply address ({exc}). It was signed with "
            f"{secret_source(settings)}; if `mailgate serve` signs with other keys (it logs "
            '"signing with …" at start), run reply-test with the same MAILGATE_DATA_DIR or '
            "MAILGATE_SECRET",
            file=sys.stderr,
        )
        return 1
    except Exception as exc:  # report any SMTP failure to the operator as it is
        print(
            f"mailgate: the listener at {host}:{settings.inbound_port} refused: {exc}",
            file=sys.stderr,
        )
        return 1
    print(
        f"replied {args.answer!r} to {args.id} as {view['approver']} via "
        f"smtp://{host}:{settings.inbound_port}, signed with {secret_source(settings)}"
    )
    return 0


def _mail_test(args: argparse.Namespace, settings: config.Settings) -> int:
    from service.mail import spamcheck
    from service.mail.send import Mailer, TransientDeliveryError
    from service.steps.notify import send_sample

    async def run() -> bytes:
        return await send_sample(
            args.to,
            mailer=Mailer(smtp_settings(settings), dkim_signer_for(settings, create=False)),
            sender=settings.mail_from,
            reply_domain=settings.reply_domain,
            secrets=_sample_keys(settings),
            public_url=settings.public_url,
        )

    try:
        sent = asyncio.run(run())
    except (TransientDeliveryError, Permanent) as exc:
        print(f"mailgate: sample email NOT sent: {exc}", file=sys.stderr)
        return 1
    print(f"sample request email sent to {args.to} via {settings.smtp_host}:{settings.smtp_port}")
    if spamcheck.spamassassin() is None:
        print("SpamAssassin is not installed (apt install spamassassin), so no spam score")
        return 0
    try:
        print(spamcheck.score(sent).describe())
    except (spamcheck.SpamCheckError, subprocess.SubprocessError, OSError) as exc:
        print(f"mailgate: the email was sent, but SpamAssassin could not score it: {exc}")
    return 0


def _dkim_dns(args: argparse.Namespace, settings: config.Settings) -> int:
    signer = dkim_signer_for(settings)
    record = signer.dns_record()
    print(f"; publish this TXT record so receivers can verify mail from {signer.domain}:")
    print(f"; name:  {record.name}")
    print(f"; value: {record.value}")
    print(record.zone_line())
    return 0


def _sample_keys(settings: config.Settings) -> tuple[str, ...]:
    """The sample's reply address names no round, so any key may sign it: serve's when there
    are any, else a throwaway one rather than a data dir made just for a test email."""
    try:
        return secrets_for(settings, create=False)
    except ConfigError:
        return (pysecrets.token_urlsafe(32),)


def _postgres_only(settings: config.Settings, command: str) -> None:
    if not settings.postgres:
        msg = f"`mailgate {command}` is for a Postgres engine: set MAILGATE_ENGINE=postgresql://…"
        raise ConfigError(msg)


def _db_check(args: argparse.Namespace, settings: config.Settings) -> int:
    """Exit 0 when both schemas are in place, 1 when something must be done (and what)."""
    from service.engine import EngineUnavailable
    from service.engine.postgres import RESONATE_SCHEMA_VERSION, RESONATE_SQL_COMMIT, how_to_apply

    _postgres_only(settings, "db check")
    where = settings.masked()["MAILGATE_ENGINE"]
    try:
        report = asyncio.run(check_database(settings))
    except EngineUnavailable as exc:
        print(f"mailgate: cannot reach {where}: {exc}", file=sys.stderr)
        return 1
    print(f"database: {where}")
    found = report.resonate_version
    if found is None:
        print("resonate-pg schema: MISSING; " + how_to_apply())
    elif found != RESONATE_SCHEMA_VERSION:
        print(
            f"resonate-pg schema: version {found}, but this release is tested with "
            f"{RESONATE_SCHEMA_VERSION} (resonate.sql at commit {RESONATE_SQL_COMMIT})"
        )
    else:
        print(f"resonate-pg schema: version {found}")
    if report.pending:
        print(f"mailgate schema: {', '.join(report.pending)} not applied yet")
        print("  run `mailgate db migrate` (every role also applies them when it starts)")
    else:
        applied = ", ".join(map(str, report.applied))
        print(f"mailgate schema: up to date (migrations {applied})")
    return 0 if report.ready else 1


def _db_migrate(args: argparse.Namespace, settings: config.Settings) -> int:
    from service.engine import EngineUnavailable

    _postgres_only(settings, "db migrate")
    try:
        done = asyncio.run(migrate_database(settings))
    except EngineUnavailable as exc:
        print(
            f"mailgate: cannot reach {settings.masked()['MAILGATE_ENGINE']}: {exc}", file=sys.stderr
        )
        return 1
    print(f"applied {', '.join(done)}" if done else "Mailgate's schema is up to date")
    return 0


def _healthcheck(args: argparse.Namespace, settings: config.Settings) -> int:
    """For container HEALTHCHECKs: worker and inbox serve no HTTP, and images carry no curl."""
    problem = health.check(args.role, settings)
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    print("healthy")
    return 0


def _config_check(args: argparse.Namespace, settings: config.Settings) -> int:
    for name, value in settings.masked().items():
        print(f"{name}={value}")
    return 0


def _error(response: httpx.Response) -> str:
    try:
        return str(response.json().get("error", response.text))
    except json.JSONDecodeError:
        return f"HTTP {response.status_code}: {response.text[:200]}"


def _print_view(view: dict[str, Any]) -> None:
    """A request: its rounds when the view has them (``status ID``), their count in a listing
    row. A round without a decision is "pending" only while the request has not ended."""
    print(f"{view['id']}  {view['state']:<11}  {view['url']}  → {view['approver']}")
    print(f"    {view['detail']}")
    if isinstance(view["rounds"], int):
        print(f"    {view['rounds']} round(s)")
        return
    ended = view["state"] not in ("summarizing", "waiting")
    for entry in view["rounds"]:
        decided = (
            f"{entry['decision']} by {entry['by']} via {entry['via']}"
            if entry["decision"]
            else "no decision"
            if ended
            else "pending"
        )
        print(
            f"    round {entry['number']}: {decided}"
            + (f" — {entry['reason']}" if entry["reason"] else "")
        )
