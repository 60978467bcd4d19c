"""Settings: one table, validated at start, every variable named in errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from service import config
from service.app import secrets_for
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


def test_generated_secret_is_kept_and_an_empty_one_refused(tmp_path: Path):
    settings = config.load({"MAILGATE_DATA_DIR": str(tmp_path)})
    first = secrets_for(settings)
    assert len(first[0]) >= 32
    assert secrets_for(settings) == first
    assert (tmp_path / "secret").stat().st_mode & 0o777 == 0o600
    (tmp_path / "secret").write_text("\n")
    with pytest.raises(ConfigError, match="no usable signing secret"):
        secrets_for(settings)


def test_split_roles_need_a_shared_secret():
    with pytest.raises(ConfigError, match="MAILGATE_SECRET"):
        secrets_for(config.load({"RESONATE_URL": "http://127.0.0.1:8001"}))


def test_split_mode_refuses_a_short_secret_without_showing_it():
    remote = {"RESONATE_URL": "http://127.0.0.1:8001"}
    with pytest.raises(ConfigError, match=r"MAILGATE_SECRET.*at least 16") as refused:
        secrets_for(config.load({**remote, "MAILGATE_SECRET": "long-enough-old-key,x"}))
    assert "long-enough" not in str(refused.value)
    keys = "0123456789abcdef,fedcba9876543210"
    assert secrets_for(config.load({**remote, "MAILGATE_SECRET": keys})) == tuple(keys.split(","))


def test_a_command_is_not_stopped_by_a_bad_value_it_does_not_read():
    env = {"MAILGATE_SMTP_PORT": "smtp", "MAILGATE_HTTP_PORT": "9100"}
    settings = config.load(env, needs={"MAILGATE_HTTP_PORT"})
    assert settings.http_port == 9100
    assert settings.smtp_port == 1025
    with pytest.raises(ConfigError, match="MAILGATE_SMTP_PORT"):
        config.load(env)


def test_a_bad_value_a_command_reads_is_named_alone():
    env = {"MAILGATE_SMTP_PORT": "smtp", "MAILGATE_HTTP_PORT": "web"}
    with pytest.raises(ConfigError, match="MAILGATE_HTTP_PORT") as refused:
        config.load(env, needs={"MAILGATE_HTTP_PORT"})
    assert "MAILGATE_SMTP_PORT" not in str(refused.value)
