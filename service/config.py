"""Every setting Mailgate reads, in one table: name, type, default, and what it is for.

Settings come only from environment variables, read once at start by ``load(env)``; a bad value
stops the process with a message naming the variable. The same table drives
``mailgate config-check`` and the README test that keeps the documentation complete.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Mapping
from email.utils import parseaddr
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)
from pydantic.fields import FieldInfo

from service.durations import Rate, format_duration, parse_duration, parse_rate
from service.errors import ConfigError

_DNS_LABEL = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def _flag(value: Any) -> bool:
    text = str(value).strip().lower()
    if text in {"1", "true", "yes", "on"}:
        return True
    if text in {"0", "false", "no", "off", ""}:
        return False
    msg = f"{value!r} is not a boolean (use 1 or 0)"
    raise ValueError(msg)


def _csv(value: Any) -> tuple[str, ...]:
    if isinstance(value, list | tuple):
        return tuple(value)
    return tuple(part.strip() for part in str(value).split(",") if part.strip())


def _optional(value: Any) -> Any:
    return None if isinstance(value, str) and not value.strip() else value


def _named(value: Any) -> tuple[tuple[str, str], ...]:
    """``name:token,name:token``: each API token with the name the audit trail records."""
    if isinstance(value, list | tuple):
        return tuple(tuple(pair) for pair in value)  # type: ignore[misc]
    named: list[tuple[str, str]] = []
    for part in (p.strip() for p in str(value).split(",") if p.strip()):
        name, colon, token = part.partition(":")
        if not colon or not re.fullmatch(r"[A-Za-z0-9_.-]{1,40}", name) or not token:
            msg = f"{name!r}: write each token as name:token (name of letters, digits, _ . -)"
            raise ValueError(msg)
        if any(name == known for known, _ in named):
            msg = f"the name {name!r} is given twice"
            raise ValueError(msg)
        named.append((name, token))
    return tuple(named)


Seconds = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
#: A duration where 0 means "never" (reminders off).
SecondsOrOff = Annotated[float, BeforeValidator(parse_duration), Field(ge=0)]
Flag = Annotated[bool, BeforeValidator(_flag)]
Csv = Annotated[tuple[str, ...], BeforeValidator(_csv)]
NamedTokens = Annotated[tuple[tuple[str, str], ...], BeforeValidator(_named)]
Port = Annotated[int, Field(ge=0, le=65535)]
PerDuration = Annotated[Rate, BeforeValidator(parse_rate)]
OptionalStr = Annotated[str | None, BeforeValidator(_optional)]

POSTGRES_SCHEMES = ("postgresql://", "postgres://")
SECRET_FIELDS = frozenset({"secret", "api_token", "api_tokens", "smtp_password", "engine_token"})
#: The name the audit trail gives the single ``MAILGATE_API_TOKEN``.
SINGLE_TOKEN_NAME = "api"  # noqa: S105 (a name, not a secret)


class Settings(BaseModel):
    """Field aliases are the environment variable names; descriptions feed the docs."""

    model_config = ConfigDict(
        frozen=True, populate_by_name=True, extra="forbid", validate_default=True
    )

    data_dir: Path = Field(
        alias="MAILGATE_DATA_DIR",
        description="Where the embedded engine, the generated secret and the page cache live. "
        "Unset: ./.mailgate if the current directory has one, else $XDG_DATA_HOME/mailgate "
        "(~/.local/share/mailgate).",
    )
    secret: Csv = Field(
        (),
        alias="MAILGATE_SECRET",
        description="Signing keys, comma-separated, oldest first (newest signs). "
        "Generated into the data dir when unset in embedded mode; required with a shared engine "
        "(RESONATE_URL or a Postgres MAILGATE_ENGINE), each key at least 16 characters.",
    )
    http_host: str = Field(
        "127.0.0.1", alias="MAILGATE_HTTP_HOST", description="Gateway bind address."
    )
    http_port: Port = Field(9000, alias="MAILGATE_HTTP_PORT", description="Gateway port.")
    public_url: str = Field(
        "http://localhost:9000",
        alias="MAILGATE_PUBLIC_URL",
        description="Base URL of the gateway as approvers reach it; links are built from it.",
    )
    api_token: OptionalStr = Field(
        None,
        alias="MAILGATE_API_TOKEN",
        description="Bearer token required by the API and dashboard; required on non-loopback.",
    )
    api_tokens: NamedTokens = Field(
        (),
        alias="MAILGATE_API_TOKENS",
        description="Named API tokens, name:token,… ; the audit trail records which name "
        "submitted or decided. May be combined with MAILGATE_API_TOKEN (named api).",
    )
    http_max_bytes: int = Field(
        65_536,
        alias="MAILGATE_HTTP_MAX_BYTES",
        ge=1024,
        description="Largest request body the gateway reads; a larger one is answered 413.",
    )
    trusted_proxies: Csv = Field(
        ("127.0.0.1", "::1"),
        alias="MAILGATE_TRUSTED_PROXIES",
        description="Addresses or networks of reverse proxies whose X-Forwarded-For and "
        "X-Forwarded-Proto the gateway believes (the client's address, whether it used "
        "HTTPS); empty trusts none. Rate limits count per client address.",
    )
    credential_failures: PerDuration = Field(
        "10/15m",
        alias="MAILGATE_CREDENTIAL_FAILURES",
        description="Wrong API tokens or sessions (bearer, cookie or the login form) one "
        "client address may present, refilling evenly; past it, 429 with Retry-After.",
    )
    link_failures: PerDuration = Field(
        "20/1m",
        alias="MAILGATE_LINK_FAILURES",
        description="Invalid decision links (/decide/<token>) one client address may try, "
        "refilling evenly; past it, 429 with Retry-After.",
    )
    allowed_approvers: Csv = Field(
        (),
        alias="MAILGATE_ALLOWED_APPROVERS",
        description="Addresses and @domain entries Mailgate may email; empty allows anyone.",
    )
    decision_ttl: Seconds = Field(
        "7d",
        alias="MAILGATE_DECISION_TTL",
        description="Each round's deadline, counted from when it was sent (a request's "
        "expires_in overrides it). Links and reply addresses work exactly while it waits.",
    )
    remind_after: SecondsOrOff = Field(
        "24h",
        alias="MAILGATE_REMIND_AFTER",
        description="Remind an approver who has not answered this long after a round was sent "
        "(in the same thread); 0 turns reminders off.",
    )
    remind_every: SecondsOrOff = Field(
        "48h",
        alias="MAILGATE_REMIND_EVERY",
        description="Then remind again this often until the deadline; 0: remind once.",
    )
    workflow_timeout: Seconds = Field(
        "365d",
        alias="MAILGATE_WORKFLOW_TIMEOUT",
        description="Upper bound on a request's whole life (all rounds of waiting).",
    )
    lease_ttl: Seconds = Field(
        "60s",
        alias="MAILGATE_LEASE_TTL",
        description="Task lease; a dead worker's work moves on after it. Heartbeats keep "
        "long steps alive.",
    )
    fetcher: Literal["http", "browser"] = Field(
        "http",
        alias="MAILGATE_FETCHER",
        description="http (httpx + Beautiful Soup) or browser (headless Chromium via Selenium).",
    )
    fetch_max_bytes: int = Field(
        5_000_000, alias="MAILGATE_FETCH_MAX_BYTES", gt=0, description="Largest page accepted."
    )
    fetch_timeout: Seconds = Field(
        "20s", alias="MAILGATE_FETCH_TIMEOUT", description="Timeout of one page load."
    )
    fetch_attempts: int = Field(
        4,
        alias="MAILGATE_FETCH_ATTEMPTS",
        ge=1,
        le=20,
        description="Attempts for transient fetch errors.",
    )
    allow_private_urls: Flag = Field(
        False,
        alias="MAILGATE_ALLOW_PRIVATE_URLS",
        description="Allow loopback/private/link-local targets; cloud metadata addresses stay "
        "refused. For tests and internal pages.",
    )
    summarizer: Literal["auto", "ollama", "extractive"] = Field(
        "auto",
        alias="MAILGATE_SUMMARIZER",
        description="auto uses Ollama when it answers at start, else the offline extractive one.",
    )
    ollama_host: str = Field(
        "http://127.0.0.1:11434", alias="OLLAMA_HOST", description="Ollama server URL."
    )
    model: str = Field("llama3.1", alias="MAILGATE_MODEL", description="Ollama model name.")
    summary_input_chars: int = Field(
        12_000,
        alias="MAILGATE_SUMMARY_INPUT_CHARS",
        gt=200,
        description="Page text given to the summarizer is clipped to this many characters.",
    )
    resonate_url: OptionalStr = Field(
        None,
        alias="RESONATE_URL",
        description="Remote engine (mailgate engine or a Resonate Server); unset = embedded.",
    )
    engine: str = Field(
        "durable",
        alias="MAILGATE_ENGINE",
        description="durable (embedded, SQLite in the data dir), memory (embedded, tests), or "
        "a postgresql:// URL: every role shares that Postgres, which holds resonate-pg's schema "
        "(see Scale out). Not together with RESONATE_URL.",
    )
    engine_password_file: OptionalStr = Field(
        None,
        alias="MAILGATE_ENGINE_PASSWORD_FILE",
        description="File holding the Postgres password, for a MAILGATE_ENGINE URL written "
        "without one (e.g. a Docker secret).",
    )
    engine_host: str = Field(
        "127.0.0.1", alias="MAILGATE_ENGINE_HOST", description="`mailgate engine` bind address."
    )
    engine_port: Port = Field(
        8001, alias="MAILGATE_ENGINE_PORT", description="`mailgate engine` port."
    )
    engine_token: OptionalStr = Field(
        None,
        alias="MAILGATE_ENGINE_TOKEN",
        description="Shared bearer token between `mailgate engine` (or a Resonate Server with "
        "auth) and the roles that use it.",
    )
    engine_synchronous: Literal["FULL", "NORMAL"] = Field(
        "FULL",
        alias="MAILGATE_ENGINE_SYNCHRONOUS",
        description="SQLite synchronous mode of the embedded engine.",
    )
    retention: Seconds = Field(
        "30d",
        alias="MAILGATE_RETENTION",
        description="Finished requests are kept (and returned for the same URL) this long.",
    )
    notifier: Literal["auto", "smtp", "console"] = Field(
        "auto",
        alias="MAILGATE_NOTIFIER",
        description="auto: SMTP when the server answers at start, else print links.",
    )
    smtp_host: str = Field("127.0.0.1", alias="MAILGATE_SMTP_HOST", description="SMTP server.")
    smtp_port: Port = Field(1025, alias="MAILGATE_SMTP_PORT", description="SMTP port.")
    smtp_user: OptionalStr = Field(None, alias="MAILGATE_SMTP_USER", description="SMTP login.")
    smtp_password: OptionalStr = Field(
        None, alias="MAILGATE_SMTP_PASSWORD", description="SMTP password."
    )
    smtp_tls: Literal["none", "starttls", "tls"] = Field(
        "none", alias="MAILGATE_SMTP_TLS", description="SMTP transport security."
    )
    smtp_timeout: Seconds = Field(
        "30s", alias="MAILGATE_SMTP_TIMEOUT", description="Timeout of one SMTP conversation."
    )
    smtp_ca_file: OptionalStr = Field(
        None,
        alias="MAILGATE_SMTP_CA_FILE",
        description="CA bundle to trust for a relay with a private certificate authority.",
    )
    mail_from: str = Field(
        "Mailgate <mailgate@localhost>", alias="MAILGATE_FROM", description="Sender of our mail."
    )
    dkim_key_file: OptionalStr = Field(
        None,
        alias="MAILGATE_DKIM_KEY_FILE",
        description="PEM RSA private key that DKIM-signs every email (the domain is "
        "MAILGATE_FROM's). Generated into the data dir as dkim.pem when unset in embedded mode; "
        "required by `worker` and `inbox` with a shared engine (RESONATE_URL or Postgres).",
    )
    dkim_selector: str = Field(
        "mailgate",
        alias="MAILGATE_DKIM_SELECTOR",
        description="DKIM selector: the public key is published at "
        "<selector>._domainkey.<MAILGATE_FROM domain> (`mailgate dkim dns` prints the record).",
    )
    reply_domain: OptionalStr = Field(
        None,
        alias="MAILGATE_REPLY_DOMAIN",
        description="Domain of reply+<token>@ addresses; unset = links only, no reply-to-decide.",
    )
    inbound_host: str = Field(
        "127.0.0.1", alias="MAILGATE_INBOUND_HOST", description="Reply listener bind address."
    )
    inbound_port: Port = Field(
        2525, alias="MAILGATE_INBOUND_PORT", description="Reply listener port."
    )
    inbound_max_bytes: int = Field(
        10_485_760,
        alias="MAILGATE_INBOUND_MAX_BYTES",
        gt=1024,
        description="Largest reply accepted (advertised with SMTP SIZE).",
    )
    inbound_timeout: Seconds = Field(
        "5m",
        alias="MAILGATE_INBOUND_TIMEOUT",
        description="A reply sender's next SMTP command must arrive whole within this (RFC "
        "5321's server timeout); an idle or trickling client is then told 421 and dropped.",
    )
    inbound_data_timeout: Seconds = Field(
        "10m",
        alias="MAILGATE_INBOUND_DATA_TIMEOUT",
        description="A message must arrive whole within this after DATA (RFC 5321's DATA "
        "termination timeout).",
    )
    inbound_max_sessions: int = Field(
        500,
        alias="MAILGATE_INBOUND_MAX_SESSIONS",
        ge=1,
        description="SMTP sessions the reply listener holds at once; more are told 421.",
    )
    inbound_sessions_per_address: int = Field(
        50,
        alias="MAILGATE_INBOUND_SESSIONS_PER_ADDRESS",
        ge=1,
        description="SMTP sessions one client address may hold at once; more are told 421.",
    )
    inbound_tls_cert: OptionalStr = Field(
        None,
        alias="MAILGATE_INBOUND_TLS_CERT",
        description="PEM certificate (chain) for STARTTLS on the reply listener.",
    )
    inbound_tls_key: OptionalStr = Field(
        None, alias="MAILGATE_INBOUND_TLS_KEY", description="PEM private key for that certificate."
    )
    require_dkim: Flag = Field(
        False,
        alias="MAILGATE_REQUIRE_DKIM",
        description="Accept replies only with a valid DKIM signature aligned with From.",
    )
    callback_timeout: Seconds = Field(
        "10s",
        alias="MAILGATE_CALLBACK_TIMEOUT",
        description="Timeout of one outcome callback POST.",
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", alias="MAILGATE_LOG_LEVEL", description="Log level."
    )
    log_format: Literal["text", "json"] = Field(
        "text", alias="MAILGATE_LOG_FORMAT", description="text or json (one object per line)."
    )

    @field_validator("mail_from")
    @classmethod
    def _sender_has_domain(cls, value: str) -> str:
        address = parseaddr(value)[1]
        if "@" not in address or not address.rpartition("@")[2]:
            msg = "needs an address with a domain, e.g. Mailgate <mailgate@example.com>"
            raise ValueError(msg)
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                msg = f"{entry!r} is not an IP address or network (like 10.0.0.0/8)"
                raise ValueError(msg) from None
        return value

    @field_validator("dkim_selector")
    @classmethod
    def _selector_is_a_dns_label(cls, value: str) -> str:
        if not _DNS_LABEL.match(value):
            msg = "a selector is one DNS label: letters, digits and inner hyphens, e.g. mailgate"
            raise ValueError(msg)
        return value

    @field_validator("engine")
    @classmethod
    def _engine_is_known(cls, value: str, info: ValidationInfo) -> str:
        value = value.strip()
        if value.startswith(POSTGRES_SCHEMES):
            if info.data.get("resonate_url"):
                msg = "a Postgres engine and RESONATE_URL are two different engines; set only one"
                raise ValueError(msg)
            return value
        if value not in ("durable", "memory"):
            msg = "durable, memory, or a postgresql://user@host:5432/db URL"
            raise ValueError(msg)
        return value

    @property
    def postgres(self) -> bool:
        """True when every role shares a Postgres engine (resonate-pg)."""
        return self.engine.startswith(POSTGRES_SCHEMES)

    @property
    def embedded(self) -> bool:
        """The engine lives in this process (and its data dir); False for a shared engine."""
        return self.resonate_url is None and not self.postgres

    def postgres_url(self) -> str:
        """The Postgres URL with the password from ``MAILGATE_ENGINE_PASSWORD_FILE`` put in,
        read when a connection is made (a rotated secret file is picked up at restart)."""
        if not self.engine_password_file:
            return self.engine
        try:
            password = Path(self.engine_password_file).read_text().strip()
        except OSError as exc:
            msg = f"MAILGATE_ENGINE_PASSWORD_FILE cannot be read: {exc}"
            raise ConfigError(msg) from None
        parts = urlsplit(self.engine)
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
        return urlunsplit(parts._replace(netloc=netloc))

    @property
    def named_api_tokens(self) -> tuple[tuple[str, str], ...]:
        single = ((SINGLE_TOKEN_NAME, self.api_token),) if self.api_token else ()
        return single + self.api_tokens

    @property
    def client_token(self) -> str | None:
        """The token the ``mailgate`` operator commands present to the gateway."""
        named = self.named_api_tokens
        return named[0][1] if named else None

    def masked(self) -> dict[str, str]:
        """Effective configuration by variable name, secrets replaced by a mark."""
        shown: dict[str, str] = {}
        for name, field in type(self).model_fields.items():
            value = getattr(self, name)
            if name == "api_tokens":
                value = ",".join(f"{n}:******" for n, _ in value)
            elif isinstance(value, Rate):
                value = str(value)
            elif isinstance(value, tuple):
                value = ",".join(value)
            if _is_duration(field):
                value = format_duration(value)
            if name in SECRET_FIELDS and value and name != "api_tokens":
                value = "******"
            if name == "engine":
                value = _without_password(value)
            shown[str(field.alias)] = "" if value is None else str(value)
        return shown


DATA_DIR = "MAILGATE_DATA_DIR"
#: The default data dir of release 0.1, relative to wherever a command ran.
LEGACY_DATA_DIR = ".mailgate"


def data_dir(env: Mapping[str, str], cwd: Path) -> tuple[Path, str]:
    """The data dir as an absolute path, and why it is that one (for the start-up line).

    Release 0.1 kept its data in ``./.mailgate`` of whatever directory a command ran in, so a
    command run elsewhere silently used (or made) another one. Now the default is the user's
    data directory, the same from anywhere; but a ``./.mailgate`` that exists keeps being used,
    because moving it would strand the requests waiting in it and kill every link sent.
    """
    chosen = env.get(DATA_DIR, "").strip()
    if chosen:
        return cwd / Path(chosen).expanduser(), f"{DATA_DIR}"
    legacy = cwd / LEGACY_DATA_DIR
    if legacy.is_dir():
        return legacy, f"an existing ./{LEGACY_DATA_DIR} here; set {DATA_DIR} to use another"
    xdg = env.get("XDG_DATA_HOME", "")
    home = Path(env.get("HOME") or Path.home())
    base = Path(xdg) if Path(xdg).is_absolute() else home / ".local" / "share"
    return base / "mailgate", f"the default; set {DATA_DIR} to use another"


def _without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}:******@{host}"))


def _is_duration(field: FieldInfo) -> bool:
    return any(getattr(part, "func", None) is parse_duration for part in field.metadata)


def variables() -> dict[str, str]:
    """Variable name → description, for documentation and its test."""
    return {str(f.alias): str(f.description) for f in Settings.model_fields.values()}


def load(
    env: Mapping[str, str], *, needs: Collection[str] | None = None, cwd: Path | None = None
) -> Settings:
    """Settings from ``env``; ``needs`` names the variables a command uses, when not all.

    A bad value stops a command only if the command reads it: ``mailgate status`` talks to the
    gateway and has no business refusing to run over a mistyped SMTP port. A bad value it does
    not read is left out, so its default stands in. The data dir is resolved here, once, to an
    absolute path (see ``data_dir``).
    """
    known = variables()
    given = {key: value for key, value in env.items() if key in known}
    given[DATA_DIR] = str(data_dir(env, Path.cwd() if cwd is None else cwd)[0])
    try:
        return Settings.model_validate(given)
    except ValidationError as exc:
        problems = _problems(exc, given)
    needed = [
        problem for name, problem in problems if needs is None or name in needs or name not in given
    ]
    if needed:
        raise ConfigError("invalid configuration: " + "; ".join(needed))
    unread = {name for name, _ in problems}
    return Settings.model_validate({k: v for k, v in given.items() if k not in unread})


def _problems(exc: ValidationError, given: Mapping[str, str]) -> list[tuple[str, str]]:
    problems = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else "?"
        problems.append((name, f"{name}={given.get(name, '')!r}: {error['msg']}"))
    return problems
