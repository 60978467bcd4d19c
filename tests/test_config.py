"""Settings: one table, validated at start, every variable named in errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from service import config
from service.errors import ConfigError


def test_defaults_need_no_environment():
    settings = config.load({})
    assert settings.http_port == 9000
    assert settings.public_url == "http://localhost:9000"
    assert settings.decision_ttl == 7 * 86400
    assert settings.embedded
    assert settings.data_dir == Path(".mailgate")


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("15m", 900), ("24h", 86400), ("7d", 604800), ("45", 45)]
)
def test_durations(text: str, seconds: float):
    assert config.load({"MAILGATE_DECISION_TTL": text}).decision_ttl == seconds


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAILGATE_DECISION_TTL", "7 weeks"),
        ("MAILGATE_HTTP_PORT", "http"),
        ("MAILGATE_HTTP_PORT", "70000"),
        ("MAILGATE_FETCHER", "curl"),
        ("MAILGATE_ALLOW_PRIVATE_URLS", "maybe"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str):
    with pytest.raises(ConfigError, match=name):
        config.load({name: value})


def test_secret_is_a_rotation_list_and_masked():
    settings = config.load({"MAILGATE_SECRET": "old, new", "MAILGATE_API_TOKEN": "t0p"})
    assert settings.secret == ("old", "new")
    shown = settings.masked()
    assert shown["MAILGATE_SECRET"] == "******"
    assert shown["MAILGATE_API_TOKEN"] == "******"
    assert "t0p" not in repr(shown)


def test_remote_mode_from_resonate_url():
    assert not config.load({"RESONATE_URL": "http://127.0.0.1:8001"}).embedded
    assert config.load({"RESONATE_URL": ""}).embedded


def test_unknown_variables_are_ignored():
    assert config.load({"PATH": "/bin", "MAILGATE_MODEL": "qwen2.5"}).model == "qwen2.5"
