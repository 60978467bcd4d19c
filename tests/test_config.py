"""Settings: one table, validated at start, every variable named in errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service import config
from service.app import secrets_for
from service.errors import ConfigError


def test_defaults_need_no_environment(tmp_path: Path):
    settings = config.load({"HOME": str(tmp_path)}, cwd=tmp_path / "anywhere")
    assert settings.http_port == 9000
    assert settings.public_url == "http://localhost:9000"
    assert settings.decision_ttl == 7 * 86400
    assert settings.embedded
    assert settings.data_dir == tmp_path / ".local" / "share" / "mailgate"
    assert not settings.data_dir.exists()


def test_the_data_dir_is_absolute_and_the_same_from_anywhere(tmp_path: Path):
    env = {"HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "xdg")}
    here = config.load(env, cwd=tmp_path / "here").data_dir
    assert here == config.load(env, cwd=tmp_path / "there").data_dir == tmp_path / "xdg/mailgate"
    relative = config.load({"MAILGATE_DATA_DIR": "state"}, cwd=tmp_path)
    assert relative.data_dir == tmp_path / "state"
    assert config.data_dir({"MAILGATE_DATA_DIR": "state"}, tmp_path)[1] == "MAILGATE_DATA_DIR"


def test_an_existing_dot_mailgate_keeps_being_used(tmp_path: Path):
    """Release 0.1 kept everything in ./.mailgate: its waiting requests and the key behind every
    link already sent stay where they are."""
    (tmp_path / "project" / ".mailgate").mkdir(parents=True)
    env = {"HOME": str(tmp_path)}
    settings = config.load(env, cwd=tmp_path / "project")
    assert settings.data_dir == tmp_path / "project" / ".mailgate"
    assert "existing ./.mailgate" in config.data_dir(env, tmp_path / "project")[1]


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("15m", 900), ("24h", 86400), ("7d", 604800), ("45", 45)]
)
def test_durations(text: str, seconds: float):
    assert config.load({"MAILGATE_DECISION_TTL": text}).decision_ttl == seconds


@given(st.integers(min_value=1, max_value=10**12))
def test_durations_print_the_way_they_are_written(millis: int):
    written = config.format_duration(millis / 1000)
    assert config.parse_duration(written) == pytest.approx(millis / 1000)
    assert written[-2:] == "ms" or written[:-1].isdigit()


def test_config_check_shows_durations_in_units():
    shown = config.load({"MAILGATE_LEASE_TTL": "90s", "MAILGATE_SMTP_TIMEOUT": "1.5"}).masked()
    assert shown["MAILGATE_DECISION_TTL"] == "7d"
    assert shown["MAILGATE_WORKFLOW_TIMEOUT"] == "365d"
    assert shown["MAILGATE_LEASE_TTL"] == "90s"
    assert shown["MAILGATE_SMTP_TIMEOUT"] == "1500ms"


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


def test_commands_that_only_read_never_create_a_secret(tmp_path: Path):
    settings = config.load({"MAILGATE_DATA_DIR": str(tmp_path / "data")})
    with pytest.raises(ConfigError, match=f"no signing secret at {tmp_path / 'data'}"):
        secrets_for(settings, create=False)
    assert not (tmp_path / "data").exists()
    made = secrets_for(settings)
    assert secrets_for(settings, create=False) == made


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
