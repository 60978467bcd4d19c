"""Liveness probes per role, for ``mailgate healthcheck`` in containers."""

from __future__ import annotations

import smtplib
import socket
from urllib.parse import urlsplit

import httpx
import psycopg

from service.config import Settings

TIMEOUT_S = 5.0


def check(role: str, settings: Settings) -> str | None:
    """None when the role answers, else what failed."""
    if role in ("serve", "gateway"):
        return _http(f"http://{local_host(settings.http_host)}:{settings.http_port}/healthz")
    if role == "inbox":
        return _smtp(local_host(settings.inbound_host), settings.inbound_port)
    if role == "engine":
        return _tcp(local_host(settings.engine_host), settings.engine_port)
    if settings.postgres:
        return _postgres(settings.postgres_url())
    if settings.resonate_url is None:
        return "neither RESONATE_URL nor a Postgres MAILGATE_ENGINE is set"
    parts = urlsplit(settings.resonate_url)
    return _tcp(parts.hostname or "127.0.0.1", parts.port or 8001)


def local_host(host: str) -> str:
    return "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104


def _http(url: str) -> str | None:
    try:
        response = httpx.get(url, timeout=TIMEOUT_S)
    except httpx.HTTPError as exc:
        return f"{url}: {exc}"
    return None if response.status_code == 200 else f"{url}: HTTP {response.status_code}"


def _smtp(host: str, port: int) -> str | None:
    try:
        with smtplib.SMTP(host, port, timeout=TIMEOUT_S) as client:
            code, _ = client.noop()
    except (OSError, smtplib.SMTPException) as exc:
        return f"smtp://{host}:{port}: {exc}"
    return None if code == 250 else f"smtp://{host}:{port}: NOOP answered {code}"


def _postgres(url: str) -> str | None:
    """A worker's engine is its database: one connection and one query prove it answers."""
    try:
        with psycopg.connect(url, connect_timeout=int(TIMEOUT_S)) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        return f"postgres: {str(exc).strip().splitlines()[0] if str(exc).strip() else exc!r}"
    return None


def _tcp(host: str, port: int) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=TIMEOUT_S):
            return None
    except OSError as exc:
        return f"{host}:{port}: {exc}"
