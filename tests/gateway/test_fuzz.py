"""Property-based fuzzing of every operation of the HTTP API, from its own OpenAPI description.

Schemathesis draws requests from ``GET /openapi.json`` (valid ones and ones that break the
schema), with a valid API token and without one, against Mailgate serving real HTTP. Whatever
arrives, the gateway answers something other than a 5xx, never logs an unhandled exception,
and answers only what the description says it may.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from support import BackgroundMailgate

from service import config
from service.gateway.openapi import document

TOKEN = "fuzz-token-0123456789"
EXAMPLES = 30
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
CHECKS = [
    schemathesis.checks.not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


class Errors(logging.Handler):
    """Every ERROR record the gateway logs while it is fuzzed: an exception that a route let
    escape is logged by uvicorn even when the client saw an answer."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BackgroundMailgate]:
    env = {
        "MAILGATE_DATA_DIR": str(tmp_path_factory.mktemp("fuzz")),
        "MAILGATE_HTTP_PORT": "0",
        "MAILGATE_ENGINE": "memory",
        "MAILGATE_SUMMARIZER": "extractive",
        "MAILGATE_NOTIFIER": "console",
        "MAILGATE_SECRET": "fuzz-secret-0123456789",
        "MAILGATE_API_TOKEN": TOKEN,
        # Fuzzing explores the routes, not the limiter (tests/gateway/test_throttle.py does).
        "MAILGATE_CREDENTIAL_FAILURES": "1000000/1s",
        "MAILGATE_LINK_FAILURES": "1000000/1s",
    }
    with BackgroundMailgate(config.load(env)) as running:
        yield running


@pytest.fixture(scope="module")
def errors() -> Iterator[Errors]:
    handler = Errors()
    root = logging.getLogger()
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)


#: What ``GET /openapi.json`` serves (tests/gateway/test_openapi.py checks they are equal).
schema = schemathesis.openapi.from_dict(document("http://127.0.0.1"))


@schema.parametrize()
@FUZZ
def test_with_a_token(case: schemathesis.Case, served: BackgroundMailgate, errors: Errors):
    case.call_and_validate(
        base_url=served.base,
        headers={"Authorization": f"Bearer {TOKEN}"},
        checks=CHECKS,
    )
    assert [r.getMessage() for r in errors.records] == []


@schema.parametrize()
@FUZZ
def test_without_one(case: schemathesis.Case, served: BackgroundMailgate, errors: Errors):
    case.headers = {k: v for k, v in (case.headers or {}).items() if k.lower() != "authorization"}
    case.call_and_validate(base_url=served.base, checks=CHECKS)
    assert [r.getMessage() for r in errors.records] == []
