"""Composition root: every choice between peers is made here, once, at start.

``Mailgate`` wires settings into the engine connection, the Resonate client, the steps and the
transports a role needs. Constructing it opens nothing; ``start()`` opens the engine (taking
its lock), probes Ollama and SMTP for the ``auto`` choices, starts the worker and binds the
HTTP gateway; ``stop()`` undoes it in reverse order. Connection precedence is documented in one
place, ``connect``: ``RESONATE_URL`` (a remote engine) or ``MAILGATE_ENGINE=postgresql://…`` (a
shared Postgres, never both), then ``MAILGATE_ENGINE=memory``, then the durable SQLite engine
in the data dir.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets as pysecrets
import ssl
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from email.utils import parseaddr
from pathlib import Path

import uvicorn
from resonate.error import ServerError
from resonate.resonate import Resonate
from resonate.retry import Never
from resonate.timing import now_ms
from resonate_base.connections import Network, Source
from resonate_base.error import ConnectorError

from service import engine, retry, rounds, workflow
from service.config import Settings
from service.decisions import Decisions
from service.domain import WORKER_GROUP
from service.engine.metered import MeteredNetwork
from service.engine.postgres import (
    PostgresEngine,
    SchemaMissing,
    Sessions,
    open_postgres,
    patiently,
    resonate_schema,
)
from service.errors import ConfigError
from service.gateway import throttle
from service.gateway.app import build_app
from service.gateway.auth import ApiTokens
from service.gateway.context import Gateway
from service.inbox.handler import ReplyHandler
from service.inbox.server import InboxServer
from service.ledger import Ledger, legacy
from service.ledger.index import Index, PromiseIndex
from service.ledger.postgres import PostgresIndex, Retention, applied, migrate, pending
from service.mail import signing
from service.mail.send import Mailer, SmtpSettings, smtp_reachable
from service.metrics import Metrics
from service.pagecache import PageCache
from service.progress import Progress
from service.retry import Retry
from service.steps.callback import CallbackSender
from service.steps.fetch import Fetcher, HttpFetcher
from service.steps.notify import ConsoleNotifier, Notifier, SmtpNotifier
from service.steps.summarize import (
    ExtractiveSummarizer,
    OllamaSummarizer,
    Summarizer,
    ollama_available,
)
from service.submissions import Policy

logger = logging.getLogger(__name__)

GATEWAY_GROUP = "gateway"
INBOX_GROUP = "inbox"
LOOPBACK = {"127.0.0.1", "::1", "localhost"}
MIN_SECRET_CHARS = 16
ENGINE_WAIT = replace(retry.ENGINE, transient=(ServerError, ConnectorError))


@dataclass(frozen=True)
class Roles:
    worker: bool = False
    gateway: bool = False
    inbox: bool = False


def secrets_for(settings: Settings, *, create: bool = True) -> tuple[str, ...]:
    """Configured keys, or (embedded only) a key generated once and kept in the data dir.

    Links must survive restarts, so a generated key is written before it is first used. Split
    processes cannot share a per-directory key, hence the requirement with ``RESONATE_URL``.
    Commands that only act on what ``serve`` made pass ``create=False``: a key of their own
    would sign what the service can never verify.
    """
    if settings.secret and not settings.embedded:
        shortest = min(len(key) for key in settings.secret)
        if shortest < MIN_SECRET_CHARS:
            msg = (
                f"MAILGATE_SECRET: a key of {shortest} characters is too short to sign links "
                f"other processes trust; use at least {MIN_SECRET_CHARS} (e.g. `openssl rand "
                "-hex 32`)"
            )
            raise ConfigError(msg)
    if settings.secret:
        return settings.secret
    if not settings.embedded:
        msg = (
            "MAILGATE_SECRET is required with a shared engine (RESONATE_URL or a Postgres "
            "MAILGATE_ENGINE): all roles share it"
        )
        raise ConfigError(msg)
    path = secret_path(settings)
    if not path.exists() and not create:
        msg = (
            f"no signing secret at {path}: run this with the MAILGATE_DATA_DIR (or the "
            "MAILGATE_SECRET) that `mailgate serve` uses"
        )
        raise ConfigError(msg)
    if not path.exists():
        _write_new(path, pysecrets.token_urlsafe(32).encode())
    secret = path.read_text().strip()
    if len(secret) < MIN_SECRET_CHARS:
        msg = (
            f"{path} holds no usable signing secret; delete it to generate a new one "
            "(links already sent stop working) or set MAILGATE_SECRET"
        )
        raise ConfigError(msg)
    return (secret,)


def dkim_signer_for(settings: Settings, *, create: bool = True) -> signing.DkimSigner:
    """The DKIM key from ``MAILGATE_DKIM_KEY_FILE``, or (embedded only) one generated once and
    kept in the data dir. Split processes cannot share a per-directory key, and a worker and an
    inbox signing with different keys would fail half the checks, hence the requirement with
    ``RESONATE_URL``. Without ``create`` a missing key is replaced by a throwaway one (a sample
    email is not worth a data dir)."""
    if settings.dkim_key_file:
        path = Path(settings.dkim_key_file)
    elif not settings.embedded:
        msg = (
            "MAILGATE_DKIM_KEY_FILE is required with a shared engine (RESONATE_URL or a Postgres "
            "MAILGATE_ENGINE): every worker and the inbox sign their mail with the same key; "
            "create one with `openssl genpkey "
            "-algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out dkim.pem`"
        )
        raise ConfigError(msg)
    else:
        path = settings.data_dir / "dkim.pem"
        if not path.exists() and not create:
            return signing.DkimSigner(
                _domain(settings), settings.dkim_selector, signing.new_private_key()
            )
        if not path.exists():
            _write_new(path, signing.new_private_key())
    return signing.DkimSigner(_domain(settings), settings.dkim_selector, signing.read_key(path))


def _domain(settings: Settings) -> str:
    return parseaddr(settings.mail_from)[1].rpartition("@")[2]


def secret_path(settings: Settings) -> Path:
    return settings.data_dir / "secret"


def secret_source(settings: Settings) -> str:
    """Where the signing keys come from, in words an operator can check against another
    process's (a token signed by one key source never verifies under another)."""
    if settings.secret:
        return f"MAILGATE_SECRET ({len(settings.secret)} key(s))"
    return f"the secret in {secret_path(settings)}"


def _write_new(path: Path, content: bytes) -> None:
    """Written to a private temporary file, synced, then linked into place: a crash leaves
    either no file or a whole one, and a racing second process keeps the first one's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    try:
        os.link(partial, path)
        logger.info("generated %s", path)
    except FileExistsError:
        pass
    finally:
        partial.unlink()


def check_bind(settings: Settings) -> None:
    if settings.http_host not in LOOPBACK and not settings.named_api_tokens:
        msg = (
            f"refusing to bind MAILGATE_HTTP_HOST={settings.http_host} without "
            "MAILGATE_API_TOKEN or MAILGATE_API_TOKENS: anyone on the network could submit "
            "and list requests"
        )
        raise ConfigError(msg)


def smtp_settings(settings: Settings) -> SmtpSettings:
    return SmtpSettings(
        host=settings.smtp_host,
        port=settings.smtp_port,
        user=settings.smtp_user,
        password=settings.smtp_password,
        tls=settings.smtp_tls,
        timeout_s=settings.smtp_timeout,
        ca_file=settings.smtp_ca_file,
    )


def inbound_tls(settings: Settings) -> ssl.SSLContext | None:
    if not settings.inbound_tls_cert:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(settings.inbound_tls_cert, settings.inbound_tls_key)
    except (OSError, ssl.SSLError) as exc:
        msg = f"MAILGATE_INBOUND_TLS_CERT/KEY cannot be loaded: {exc}"
        raise ConfigError(msg) from None
    return context


def connect(
    settings: Settings, *, pid: str, group: str, clock: Callable[[], int] = now_ms
) -> engine.EngineConnection | None:
    """The embedded engine to use, or None for a shared one (``RESONATE_URL``, Postgres)."""
    if not settings.embedded:
        return None
    if settings.engine == "memory":
        return engine.open_memory(pid=pid, group=group, clock=clock)
    return engine.open_durable(
        settings.data_dir / "engine",
        pid=pid,
        group=group,
        synchronous=settings.engine_synchronous,
        retention_ms=int(settings.retention * 1000),
        clock=clock,
    )


@dataclass
class Mailgate:
    settings: Settings
    roles: Roles
    clock: Callable[[], int] = now_ms
    metrics: Metrics = field(default_factory=Metrics)
    pid: str = field(default_factory=lambda: uuid.uuid4().hex)
    resonate: Resonate | None = None
    ledger: Ledger | None = None
    progress: Progress | None = None
    connection: engine.EngineConnection | None = None
    postgres: PostgresEngine | None = None
    retention: Retention | None = None
    fetcher: Fetcher | None = None
    notifier: Notifier | None = None
    inbox: InboxServer | None = None
    _mailer: Mailer | None = None
    _server: uvicorn.Server | None = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _serving: asyncio.Task[None] | None = None

    async def start(self) -> None:
        settings = self.settings
        group = (
            WORKER_GROUP
            if self.roles.worker
            else GATEWAY_GROUP
            if self.roles.gateway
            else INBOX_GROUP
        )
        secrets = secrets_for(settings)
        logger.info("signing with %s", secret_source(settings))
        self.connection = connect(settings, pid=self.pid, group=group, clock=self.clock)
        network, sources = await self._connections(group)
        resonate = Resonate(
            network=MeteredNetwork(network, self.metrics.count_engine_request),
            sources=sources,
            group=group,
            pid=self.pid,
            ttl=timedelta(seconds=settings.lease_ttl),
            retry_policy=Never(),
            env={},
            clock=self.clock,
            subscription_refresh_secs=0,
            autostart=False,
        )
        self.resonate = resonate
        ledger = Ledger(resonate, secrets=secrets, clock=self.clock, index=self._index(resonate))
        self.ledger = ledger
        self.progress = Progress(ledger)
        decisions = Decisions(ledger, self.metrics, self.clock)
        workflow.register(resonate)
        if self.connection is None:
            await self._wait_for_engine(ledger)
        if self.roles.worker:
            resonate.with_dependency(await self._deps(secrets, ledger, decisions, self.progress))
            if self.postgres is None:  # release 0.1 never ran on Postgres: nothing to adopt
                await legacy.adopt(ledger)
        if self.postgres is not None and self.roles.worker:
            patiently(resonate.start)  # the workflows it runs wait out an outage
        else:
            resonate.start()
        if self.postgres is not None:
            await self.postgres.start()
            if self.retention is not None:
                self.retention.start()
        if self.roles.gateway:
            await self._serve_http(ledger, decisions, secrets)
        if self.roles.inbox:
            await self._listen_smtp(decisions, secrets)

    async def _connections(self, group: str) -> tuple[Network, list[Source]]:
        """The embedded engine is both the network and the source of pushed work; a remote one
        pushes over SSE to roles that listen. The gateway listens too: the engine's push of
        each finished request is what lets the SDK drop the handle its ``rpc`` created. The
        inbox creates none."""
        if self.connection is not None:
            await self.connection.start()
            return self.connection, [self.connection]
        listen = self.roles.worker or self.roles.gateway
        if self.settings.postgres:
            self.postgres = open_postgres(
                self.settings.postgres_url(),
                pid=self.pid,
                group=group,
                drive_timers=self.roles.worker,
                lease_ttl_s=self.settings.lease_ttl,
            )
            connection = self.postgres.connection
            return self.postgres.network, [connection] if listen else []
        assert self.settings.resonate_url is not None
        return engine.remote_connections(
            self.settings.resonate_url,
            token=self.settings.engine_token,
            pid=self.pid,
            group=group,
            listen=listen,
        )

    def _index(self, resonate: Resonate) -> Index:
        """Postgres answers no promise search: there the ledger keeps its index in tables of
        its own (and a worker purges what retention lets go, which resonate-pg never does)."""
        if self.postgres is None:
            return PromiseIndex(resonate)
        index = PostgresIndex(
            self.postgres.sessions,
            resonate,
            on_query=self.metrics.count_engine_request,
            patience_s=self.settings.lease_ttl,
        )
        if self.roles.worker:
            self.retention = Retention(
                index, retention_ms=int(self.settings.retention * 1000), clock=self.clock
            )
        return index

    async def _wait_for_engine(self, ledger: Ledger) -> None:
        """A split role may start before its engine: wait, saying so, instead of failing. On
        Postgres, a database without resonate-pg's schema is an operator's mistake and stops
        the role; Mailgate's own tables are created or migrated here."""
        where = self._engine_name()

        def waiting(failure: Retry) -> None:
            logger.warning(
                "waiting for the engine at %s (%s); retrying in %.1fs",
                where,
                failure.error,
                failure.delay_s,
            )

        await ENGINE_WAIT.run(lambda: self._prepare(ledger), on_retry=waiting)
        logger.info("engine at %s is reachable", where)

    async def _prepare(self, ledger: Ledger) -> None:
        if self.postgres is not None:
            schema = await resonate_schema(self.postgres.sessions)
            if schema.version is None:
                raise ConfigError(str(SchemaMissing()))
            applied = await migrate(self.postgres.sessions)
            if applied:
                logger.info("postgres: applied Mailgate's migrations %s", ", ".join(applied))
        await ledger.ping()

    def _engine_name(self) -> str:
        if self.settings.postgres:
            return self.settings.masked()["MAILGATE_ENGINE"]
        return str(self.settings.resonate_url)

    async def stop(self) -> None:
        self._stopping.set()
        if self.inbox is not None:
            await self.inbox.stop()
        if self._server is not None:
            self._server.should_exit = True
        if self._serving is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._serving
        if self.retention is not None:
            await self.retention.stop()
        if self.progress is not None:
            await self.progress.close()
        if self.resonate is not None:
            await self.resonate.stop()
        if self.fetcher is not None:
            await self.fetcher.close()
        if self.connection is not None:
            await self.connection.stop()
        if self.postgres is not None:
            await self.postgres.stop()

    @property
    def http_port(self) -> int:
        """The bound port (useful when configured as 0)."""
        if self._server is None or not self._server.servers:
            msg = "the gateway is not listening"
            raise RuntimeError(msg)
        return self._server.servers[0].sockets[0].getsockname()[1]

    async def _deps(
        self,
        secrets: tuple[str, ...],
        ledger: Ledger,
        decisions: Decisions,
        progress: Progress,
    ) -> rounds.Deps:
        settings = self.settings
        self.fetcher = self._fetcher()
        return rounds.Deps(
            fetcher=self.fetcher,
            summarizer=await self._summarizer(),
            notifier=await self._notifier(secrets),
            callbacks=CallbackSender(
                secrets=secrets,
                timeout_s=settings.callback_timeout,
                allow_private=settings.allow_private_urls,
                sleep=self._pause,
            ),
            pages=PageCache(settings.data_dir / "pages"),
            links=rounds.Links(settings.public_url, secrets, settings.decision_ttl),
            ledger=ledger,
            decisions=decisions,
            progress=progress,
            metrics=self.metrics,
            round_timeout=timedelta(seconds=settings.workflow_timeout),
            clock=self.clock,
        )

    def _fetcher(self) -> Fetcher:
        settings = self.settings
        options = {
            "allow_private": settings.allow_private_urls,
            "max_bytes": settings.fetch_max_bytes,
            "timeout_s": settings.fetch_timeout,
            "attempts": settings.fetch_attempts,
            "sleep": self._pause,
        }
        if settings.fetcher == "browser":
            from service.steps.browser import BrowserFetcher  # selenium only when asked for

            return BrowserFetcher(**options)
        return HttpFetcher(**options, user_agent="Mailgate/0.1 (+summary approval)")

    async def _summarizer(self) -> Summarizer:
        settings = self.settings
        extractive = ExtractiveSummarizer(input_budget_chars=settings.summary_input_chars)
        if settings.summarizer == "extractive":
            logger.info("summarizer: extractive (offline, no LLM)")
            return extractive
        ollama = OllamaSummarizer(
            host=settings.ollama_host,
            model=settings.model,
            input_budget_chars=settings.summary_input_chars,
            on_retry=self._note,
            sleep=self._pause,
        )
        if settings.summarizer == "ollama":
            logger.info("summarizer: ollama %s at %s", settings.model, settings.ollama_host)
            return ollama
        problem = await ollama_available(settings.ollama_host, settings.model)
        if problem is None:
            logger.info("summarizer: ollama %s at %s", settings.model, settings.ollama_host)
            return ollama
        logger.warning(
            "summarizer: FALLING BACK to the offline extractive summarizer because %s. "
            "Summaries will be excerpts, not LLM summaries. Install Ollama "
            "(https://ollama.com), run `ollama serve` and `ollama pull %s`, then restart "
            "(or set MAILGATE_SUMMARIZER=extractive to silence this).",
            problem,
            settings.model,
        )
        return extractive

    async def _notifier(self, secrets: tuple[str, ...]) -> Notifier:
        settings = self.settings
        if self.notifier is not None:
            logger.info("notifier: %s (given)", self.notifier.name)
            return self.notifier
        smtp = smtp_settings(settings)
        where = f"{settings.smtp_host}:{settings.smtp_port}"
        if settings.notifier == "auto" and not await smtp_reachable(smtp):
            logger.warning(
                "notifier: console — no SMTP server answers at %s, so decision links are "
                "printed here. Start MailHog (docker run -p 1025:1025 -p 8025:8025 "
                "mailhog/mailhog) or set MAILGATE_SMTP_HOST, then restart.",
                where,
            )
            return ConsoleNotifier()
        if settings.notifier == "console":
            logger.info("notifier: console (decision links are printed)")
            return ConsoleNotifier()
        logger.info("notifier: smtp via %s, from %s", where, settings.mail_from)
        if settings.reply_domain is None:
            logger.info(
                "replies: MAILGATE_REPLY_DOMAIN is not set, so emails carry links only "
                "(no reply+<token>@ address to answer YES/NO to)"
            )
        return SmtpNotifier(
            mailer=self._outbox(),
            sender=settings.mail_from,
            reply_domain=settings.reply_domain,
            secrets=secrets,
            clock=self.clock,
            on_retry=self._note,
            sleep=self._pause,
        )

    async def _pause(self, seconds: float) -> None:
        """The steps' retry sleep: a step waiting for Ollama, the mail server or a page to come
        back must not hold up ``stop()`` (the SDK joins every running step), so stopping ends
        the wait as a cancellation. Nothing was checkpointed: the step runs again after the
        next start, exactly as after a crash."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        if self._stopping.is_set():
            raise asyncio.CancelledError("mailgate is stopping")

    async def _listen_smtp(self, decisions: Decisions, secrets: tuple[str, ...]) -> None:
        settings = self.settings
        if settings.reply_domain is None:
            logger.info("reply listener off: set MAILGATE_REPLY_DOMAIN to decide by replying")
            return
        handler = ReplyHandler(
            decisions=decisions,
            reply_domain=settings.reply_domain,
            secrets=secrets,
            sender=settings.mail_from,
            send=self._outbox().send,
            clock=self.clock,
            metrics=self.metrics,
            require_dkim=settings.require_dkim,
        )
        self.inbox = InboxServer(
            handler,
            host=settings.inbound_host,
            port=settings.inbound_port,
            max_bytes=settings.inbound_max_bytes,
            hostname=settings.reply_domain,
            tls_context=inbound_tls(settings),
            timeout_s=settings.inbound_timeout,
            data_timeout_s=settings.inbound_data_timeout,
            max_sessions=settings.inbound_max_sessions,
            sessions_per_address=settings.inbound_sessions_per_address,
        )
        await self.inbox.start()

    def _outbox(self) -> Mailer:
        """One mailer for the worker's requests and the inbox's notices: one key, one path.
        Built on first need, so a run that sends no mail generates no key."""
        if self._mailer is None:
            self._mailer = Mailer(smtp_settings(self.settings), dkim_signer_for(self.settings))
        return self._mailer

    def _note(self, detail: str) -> None:
        request_id = rounds.current_request.get(None)
        if request_id is not None and self.progress is not None:
            self.progress.note(request_id, detail)

    async def _serve_http(
        self, ledger: Ledger, decisions: Decisions, secrets: tuple[str, ...]
    ) -> None:
        settings = self.settings
        gateway = Gateway.create(
            ledger=ledger,
            decisions=decisions,
            policy=Policy(
                allowed_approvers=settings.allowed_approvers,
                allow_private_urls=settings.allow_private_urls,
                workflow_timeout_s=settings.workflow_timeout,
                decision_ttl_s=settings.decision_ttl,
                remind_after_s=settings.remind_after,
                remind_every_s=settings.remind_every,
            ),
            clock=self.clock,
            secrets=secrets,
            public_url=settings.public_url,
            link_ttl_s=settings.workflow_timeout,
            api_tokens=ApiTokens(settings.named_api_tokens),
            metrics=self.metrics,
            workflow_version=workflow.VERSION,
        )
        app = build_app(
            gateway,
            max_body_bytes=settings.http_max_bytes,
            throttle=throttle.rules(
                link_failures=settings.link_failures,
                credential_failures=settings.credential_failures,
            ),
        )
        config = uvicorn.Config(
            app,
            host=settings.http_host,
            port=settings.http_port,
            log_config=None,
            access_log=False,
            lifespan="off",
            # Passed even when empty: uvicorn would otherwise read FORWARDED_ALLOW_IPS itself.
            proxy_headers=bool(settings.trusted_proxies),
            forwarded_allow_ips=list(settings.trusted_proxies),
        )
        self._server = _QuietServer(config)
        self._serving = asyncio.create_task(self._server.serve())
        while not self._server.started:
            if self._serving.done():
                self._serving.result()
                msg = f"gateway could not bind {settings.http_host}:{settings.http_port}"
                raise ConfigError(msg)
            await asyncio.sleep(0.01)
        logger.info(
            "gateway listening on http://%s:%d (links use %s)",
            settings.http_host,
            self.http_port,
            settings.public_url,
        )


class _QuietServer(uvicorn.Server):
    """uvicorn, minus its signal handlers: the CLI owns signals and shuts everything down."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


@dataclass(frozen=True)
class DatabaseReport:
    """What ``mailgate db check`` found in the Postgres engine's database."""

    resonate_version: str | None
    applied: list[int]
    pending: list[str]

    @property
    def ready(self) -> bool:
        return self.resonate_version is not None and not self.pending


async def check_database(settings: Settings) -> DatabaseReport:
    """Raises ``EngineUnavailable`` when Postgres cannot be reached."""
    sessions = Sessions(settings.postgres_url())
    try:
        schema = await resonate_schema(sessions)
        versions = await applied(sessions)
        return DatabaseReport(schema.version, versions, pending(versions))
    finally:
        await sessions.close()


async def migrate_database(settings: Settings) -> list[str]:
    """Apply Mailgate's pending migrations; refuses while resonate-pg's schema is missing (the
    roles could not start on that database anyway)."""
    sessions = Sessions(settings.postgres_url())
    try:
        if (await resonate_schema(sessions)).version is None:
            raise ConfigError(str(SchemaMissing()))
        return await migrate(sessions)
    finally:
        await sessions.close()
