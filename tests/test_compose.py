"""The container files, checked statically: no Docker engine runs where the tests run.

The compose files are validated against the Compose specification's JSON schema (from ``../shared``;
skipped in a clone without it), which checks structure only; the rest are the promises the deploy
docs make: which services run which role and image, that published host ports never collide and
workers publish none (so ``--scale worker=N`` works), that the wiring between services points at
ports the other side serves, and that every setting the files mention is documented in the README.

Three files: ``docker-compose.yml`` (the roles on one Postgres with resonate-pg's schema, the
scale-out the suite runs in processes), ``docker-compose.resonate.yml`` (the same roles around a
Resonate Server, an alternative the suite cannot run) and ``docker-compose.embedded.yml``.
"""

from __future__ import annotations

import io
import json
import re
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from dockerfile_parse import DockerfileParser
from jsonschema import Draft7Validator
from shared_files import shared_file

from service import config
from service.engine import postgres as postgres_engine
from service.engine import store

ROOT = Path(__file__).resolve().parents[1]
SPLIT = ROOT / "docker-compose.yml"
RESONATE = ROOT / "docker-compose.resonate.yml"
EMBEDDED = ROOT / "docker-compose.embedded.yml"
FILES = [SPLIT, RESONATE, EMBEDDED]
SCALED = [SPLIT, RESONATE]
ONE_SHOTS = {"ollama-pull", "resonate-schema", "migrate"}
ENV_EXAMPLE = ROOT / "deploy" / "mailgate.env.example"
ENV_FILE = "deploy/mailgate.env"

SETTING = re.compile(r"\b(MAILGATE_[A-Z0-9_]+|RESONATE_URL|OLLAMA_HOST)\b")
RESTART_POLICIES = re.compile(r"^(no|always|unless-stopped|on-failure(:\d+)?)$")
ROLE_CHECKED = {"serve": "gateway", "gateway": "gateway", "worker": "worker", "inbox": "inbox"}


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def services(path: Path) -> dict[str, dict[str, Any]]:
    return load(path)["services"]


def mailgate_services(path: Path) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services(path).items() if s.get("image") == "mailgate:local"}


def env_example() -> dict[str, str]:
    pairs: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            pairs[key.strip()] = value.strip()
    return pairs


def effective_env(service: dict[str, Any]) -> dict[str, str]:
    """What the container sees: the env file (its committed example), then ``environment``."""
    assert service["env_file"] == ENV_FILE
    return env_example() | {k: str(v) for k, v in service.get("environment", {}).items()}


def published(port: str | dict[str, Any]) -> tuple[int | None, int, str]:
    """(host port or None when Docker picks one, container port, protocol) of a ports entry."""
    if isinstance(port, dict):
        host = port.get("published")
        return (int(host) if host else None, int(port["target"]), port.get("protocol", "tcp"))
    spec, _, protocol = str(port).partition("/")
    parts = spec.rsplit(":", 2)
    host = parts[-2] if len(parts) >= 2 else None
    return (int(host) if host else None, int(parts[-1]), protocol or "tcp")


def container_ports(service: dict[str, Any]) -> set[int]:
    return {published(p)[1] for p in service.get("ports", [])}


def image_tag(image: str) -> tuple[str, str]:
    """(repository, tag), the tag empty when there is none (``host:5000/name`` has none)."""
    name, colon, tag = image.rpartition(":")
    return (name, tag) if colon and "/" not in tag else (image, "")


# ── the schema ─────────────────────────────────────────────────────────────


@pytest.fixture(scope="module")
def validator() -> Draft7Validator:
    schema = shared_file("schemas/compose-spec.json")
    return Draft7Validator(json.loads(schema.read_text()))


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_compose_file_matches_the_compose_specification(
    validator: Draft7Validator, path: Path
) -> None:
    errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(load(path))]
    assert errors == []


def test_the_schema_rejects_a_misspelled_service_key(validator: Draft7Validator) -> None:
    broken = load(SPLIT)
    broken["services"]["worker"]["restrat"] = broken["services"]["worker"].pop("restart")
    errors = list(validator.iter_errors(broken))
    assert any("restrat" in e.message for e in errors)


# ── services, images, roles ───────────────────────────────────────────────


def test_split_file_runs_each_role_on_one_postgres() -> None:
    split = services(SPLIT)
    assert set(split) == {
        "postgres",
        "resonate-schema",
        "migrate",
        "mailhog",
        "ollama",
        "ollama-pull",
        "gateway",
        "worker",
        "inbox",
    }
    for role in ("gateway", "worker", "inbox"):
        assert split[role]["command"] == [role]
        assert split[role]["build"] == "."
        assert split[role]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    assert split["migrate"]["command"] == ["db", "migrate"]
    assert split["migrate"]["depends_on"]["resonate-schema"]["condition"] == (
        "service_completed_successfully"
    )
    repository, tag = image_tag(split["postgres"]["image"])
    assert repository == "postgres" and int(tag.split(".")[0].split("-")[0]) >= 16
    assert "postgres-data:/var/lib/postgresql/data" in split["postgres"]["volumes"]


def test_the_schema_one_shot_applies_the_pinned_resonate_sql_checked_by_its_sha256() -> None:
    """resonate.sql is resonate-pg's file: fetched at the commit the product names, checked,
    applied only when missing, and never copied into this repository."""
    schema = services(SPLIT)["resonate-schema"]
    assert schema["environment"]["RESONATE_SQL_URL"] == postgres_engine.RESONATE_SQL_URL
    assert schema["environment"]["RESONATE_SQL_SHA256"] == postgres_engine.RESONATE_SQL_SHA256
    script = schema["entrypoint"][-1]
    assert script.index("sha256sum -c") < script.index("psql -v ON_ERROR_STOP=1 -f")
    assert "to_regprocedure('resonate.get_schema_version()')" in script
    assert schema["depends_on"]["postgres"]["condition"] == "service_healthy"
    shipped = [p for p in ROOT.rglob("resonate.sql") if ".venv" not in p.parts]
    assert shipped == []


def test_the_postgres_password_is_a_secret_file_shared_by_postgres_and_the_roles() -> None:
    document = load(SPLIT)
    every = document["services"]
    assert every["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == (
        "/run/secrets/postgres-password"
    )
    for name in ("postgres", "resonate-schema", "migrate", "gateway", "worker", "inbox"):
        assert "postgres-password" in every[name]["secrets"], name
    for name, service in mailgate_services(SPLIT).items():
        env = effective_env(service)
        engine = urlsplit(env["MAILGATE_ENGINE"])
        assert engine.password is None, f"{name} keeps the password out of the URL"
        assert (engine.hostname, engine.port) == ("postgres", 5432)
        assert env["MAILGATE_ENGINE_PASSWORD_FILE"] == "/run/secrets/postgres-password"
        assert "RESONATE_URL" not in env
    assert document["secrets"]["postgres-password"]["file"] == "deploy/postgres-password"
    assert "postgres-password" in (ROOT / "deploy" / ".gitignore").read_text().split()


def test_resonate_file_runs_each_role_beside_a_resonate_server() -> None:
    split = services(RESONATE)
    assert set(split) == {
        "postgres",
        "resonate",
        "mailhog",
        "ollama",
        "ollama-pull",
        "gateway",
        "worker",
        "inbox",
    }
    for role in ("gateway", "worker", "inbox"):
        assert split[role]["command"] == [role]
        assert split[role]["build"] == "."
    assert "NOT TESTED BY THE SUITE" in RESONATE.read_text().splitlines()[0]


def test_embedded_file_runs_everything_in_one_serve_process() -> None:
    embedded = services(EMBEDDED)
    assert set(embedded) == {"mailgate", "mailhog", "ollama", "ollama-pull"}
    assert embedded["mailgate"]["command"] == ["serve"]
    assert "RESONATE_URL" not in effective_env(embedded["mailgate"])


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_outside_image_is_pinned(path: Path) -> None:
    for name, service in services(path).items():
        if service["image"] == "mailgate:local":
            continue
        _, tag = image_tag(service["image"])
        assert re.fullmatch(r"v?\d+(\.\d+)*(-[a-z0-9]+)?", tag), f"{name} uses {service['image']}"


def test_resonate_is_the_rust_server_that_speaks_the_sdks_protocol() -> None:
    """Server releases from v0.9.0 on answer `POST /` and `/poll` (protocol 2026-04-01); the Go
    server's v0.7/v0.8 images serve the REST API that resonate-sdk 0.8.1 no longer uses."""
    resonate = services(RESONATE)["resonate"]
    repository, tag = image_tag(resonate["image"])
    assert repository == "resonatehqio/resonate"
    version = tuple(int(part) for part in tag.removeprefix("v").split("."))
    assert version >= (0, 9, 0)
    command = resonate["command"]
    assert command[0] == "serve"
    assert command[command.index("--storage-type") + 1] == "postgres"
    store = urlsplit(command[command.index("--storage-postgres-url") + 1])
    assert store.hostname == "postgres" and store.port == 5432
    assert resonate["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "postgres-data:/var/lib/postgresql/data" in services(RESONATE)["postgres"]["volumes"]


def test_the_deploy_docs_name_the_pinned_image_and_the_file_to_back_up() -> None:
    docs = (ROOT / "docs" / "deploy.md").read_text()
    assert services(RESONATE)["resonate"]["image"] in docs
    assert postgres_engine.RESONATE_SQL_SHA256 in docs
    assert "not tested by the suite" in docs
    assert f"MAILGATE_DATA_DIR/engine/{store.DB_FILE}" in docs


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_ollama_pull_is_a_one_shot_of_the_configured_model(path: Path) -> None:
    every = services(path)
    pull = every["ollama-pull"]
    assert pull["image"] == every["ollama"]["image"]
    assert "MAILGATE_MODEL" in " ".join(pull["entrypoint"])
    assert "MAILGATE_MODEL" in env_example()
    assert pull["restart"] == "no"
    assert pull["depends_on"]["ollama"]["condition"] == "service_healthy"
    assert effective_env(pull)["OLLAMA_HOST"] == "http://ollama:11434"
    assert any(volume.endswith(":/root/.ollama") for volume in every["ollama"]["volumes"])


# ── wiring between services ────────────────────────────────────────────────


def test_split_roles_share_one_engine_llm_relay_and_secret() -> None:
    for name, service in mailgate_services(SPLIT).items():
        env = effective_env(service)
        assert env["MAILGATE_ENGINE"] == "postgresql://mailgate@postgres:5432/mailgate", name
        assert env["OLLAMA_HOST"] == "http://ollama:11434", name
        assert (env["MAILGATE_SMTP_HOST"], env["MAILGATE_SMTP_PORT"]) == ("mailhog", "1025")
        assert "MAILGATE_SECRET" in env
        assert service["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_resonate_roles_share_one_server() -> None:
    every = services(RESONATE)
    for name, service in mailgate_services(RESONATE).items():
        env = effective_env(service)
        assert env["RESONATE_URL"] == "http://resonate:8001", name
        assert service["depends_on"]["resonate"]["condition"] == "service_healthy"
    engine = urlsplit(effective_env(every["worker"])["RESONATE_URL"])
    assert engine.port in container_ports(every[str(engine.hostname)])


@pytest.mark.parametrize("path", SCALED, ids=lambda p: p.name)
def test_every_split_role_that_sends_mail_signs_with_the_one_dkim_key(path: Path) -> None:
    document = load(path)
    every = document["services"]
    for name in ("worker", "inbox"):
        key_file = effective_env(every[name])["MAILGATE_DKIM_KEY_FILE"]
        assert key_file == "/run/secrets/dkim-key", name
        assert "dkim-key" in every[name]["secrets"], name
    assert document["secrets"]["dkim-key"]["file"] == "deploy/dkim.pem"
    assert "dkim.pem" in (ROOT / "deploy" / ".gitignore").read_text().split()
    assert "MAILGATE_DKIM_KEY_FILE" not in effective_env(every["gateway"]), "it sends no mail"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_mailgate_points_at_ports_its_neighbours_serve(path: Path) -> None:
    every = services(path)
    for service in mailgate_services(path).values():
        env = effective_env(service)
        ollama = urlsplit(env["OLLAMA_HOST"])
        assert ollama.hostname in every and ollama.port == 11434
        assert env["MAILGATE_SMTP_HOST"] in every
        assert int(env["MAILGATE_SMTP_PORT"]) in container_ports(every[env["MAILGATE_SMTP_HOST"]])


@pytest.mark.parametrize("path", SCALED, ids=lambda p: p.name)
def test_gateway_and_inbox_listen_on_all_interfaces_with_a_token(path: Path) -> None:
    every = services(path) | {"serve": services(EMBEDDED)["mailgate"]}
    for name in ("gateway", "serve"):
        env = effective_env(every[name])
        assert env["MAILGATE_HTTP_HOST"] == "0.0.0.0"
        assert int(env["MAILGATE_HTTP_PORT"]) in container_ports(every[name])
        assert "MAILGATE_API_TOKEN" in env and env["MAILGATE_PUBLIC_URL"]
    for name in ("inbox", "serve"):
        env = effective_env(every[name])
        assert env["MAILGATE_INBOUND_HOST"] == "0.0.0.0"
        assert int(env["MAILGATE_INBOUND_PORT"]) in container_ports(every[name])
        assert env["MAILGATE_REPLY_DOMAIN"]


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_each_container_configuration_loads_once_the_secrets_are_filled_in(path: Path) -> None:
    for name, service in mailgate_services(path).items():
        env = effective_env(service) | {"MAILGATE_SECRET": "k" * 64, "MAILGATE_API_TOKEN": "t" * 64}
        settings = config.load(env)
        assert settings.embedded == (path == EMBEDDED), name


def test_the_env_example_commits_no_secret() -> None:
    example = env_example()
    assert example["MAILGATE_SECRET"] == ""
    assert example["MAILGATE_API_TOKEN"] == ""
    assert "mailgate.env" in (ROOT / "deploy" / ".gitignore").read_text().split()
    assert "deploy" in (ROOT / ".dockerignore").read_text().split()


def test_embedded_engine_keeps_its_data_on_a_named_volume() -> None:
    document = load(EMBEDDED)
    mailgate = document["services"]["mailgate"]
    data_dir = effective_env(mailgate)["MAILGATE_DATA_DIR"]
    volume, _, target = mailgate["volumes"][0].partition(":")
    assert target == data_dir and volume in document["volumes"]


# ── ports, health, restarts ────────────────────────────────────────────────


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_no_two_services_publish_the_same_host_port(path: Path) -> None:
    taken = Counter(
        (host, protocol)
        for service in services(path).values()
        for host, _, protocol in map(published, service.get("ports", []))
        if host is not None
    )
    assert [port for port, count in taken.items() if count > 1] == []


@pytest.mark.parametrize("path", SCALED, ids=lambda p: p.name)
def test_worker_publishes_no_port_so_it_scales(path: Path) -> None:
    worker = services(path)["worker"]
    assert "ports" not in worker
    assert "container_name" not in worker


def test_published_ports_match_the_documented_defaults() -> None:
    split, embedded = services(SPLIT), services(EMBEDDED)
    assert container_ports(split["gateway"]) == {9000}
    assert container_ports(split["inbox"]) == {2525}
    assert container_ports(split["postgres"]) == set(), "only the containers reach Postgres"
    assert container_ports(services(RESONATE)["resonate"]) == {8001}
    assert container_ports(split["mailhog"]) == container_ports(embedded["mailhog"]) == {1025, 8025}
    assert container_ports(embedded["mailgate"]) == {9000, 2525}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_dependencies_exist_and_waited_for_health_is_checked(path: Path) -> None:
    every = services(path)
    for name, service in every.items():
        for target, how in service.get("depends_on", {}).items():
            assert target in every, f"{name} depends on unknown {target}"
            if how["condition"] == "service_healthy":
                assert "healthcheck" in every[target], f"{name} waits for {target}'s health"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_long_running_services_restart_and_one_shots_do_not(path: Path) -> None:
    for name, service in services(path).items():
        assert RESTART_POLICIES.match(service["restart"]), name
        wanted = "no" if name in ONE_SHOTS else "unless-stopped"
        assert service["restart"] == wanted, name


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_each_role_checks_its_own_health_without_curl(path: Path) -> None:
    for name, service in mailgate_services(path).items():
        if name in ONE_SHOTS:
            continue
        role = ROLE_CHECKED[service["command"][0]]
        assert service["healthcheck"]["test"] == ["CMD", "mailgate", "healthcheck", "--role", role]


# ── every setting mentioned is documented ──────────────────────────────────


def test_every_setting_the_deploy_files_mention_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    mentioned = set()
    for path in (*FILES, ENV_EXAMPLE):
        mentioned |= set(SETTING.findall(path.read_text()))
    assert {"MAILGATE_SECRET", "RESONATE_URL", "OLLAMA_HOST"} <= mentioned
    assert sorted(name for name in mentioned if f"`{name}`" not in readme) == []


# ── the image ──────────────────────────────────────────────────────────────


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    return DockerfileParser(fileobj=io.BytesIO((ROOT / "Dockerfile").read_bytes()))


def instructions(dockerfile: DockerfileParser, name: str) -> list[str]:
    return [entry["value"] for entry in dockerfile.structure if entry["instruction"] == name]


def test_image_is_python_312_slim_with_debian_chromium(dockerfile: DockerfileParser) -> None:
    assert dockerfile.baseimage == "python:3.12-slim"
    installs = " ".join(instructions(dockerfile, "RUN")).split()
    assert {"chromium", "chromium-driver"} <= set(installs)
    assert "apt-get" in installs


def test_image_runs_as_a_non_root_user(dockerfile: DockerfileParser) -> None:
    users = instructions(dockerfile, "USER")
    assert users and users[-1].partition(":")[0] not in ("root", "0")
    last_user = max(e["startline"] for e in dockerfile.structure if e["instruction"] == "USER")
    last_entry = max(
        e["startline"] for e in dockerfile.structure if e["instruction"] in ("CMD", "ENTRYPOINT")
    )
    assert last_user < last_entry


def test_image_entrypoint_is_mailgate_and_it_checks_health_itself(
    dockerfile: DockerfileParser,
) -> None:
    assert json.loads(instructions(dockerfile, "ENTRYPOINT")[-1]) == ["mailgate"]
    check = instructions(dockerfile, "HEALTHCHECK")[-1]
    command = json.loads(check[check.index("CMD") + len("CMD") :])
    assert command[:2] == ["mailgate", "healthcheck"]
    assert not {"curl", "wget"} & set(command)


def test_image_exposes_the_role_ports_and_keeps_data_on_a_volume(
    dockerfile: DockerfileParser,
) -> None:
    exposed = {int(port) for value in instructions(dockerfile, "EXPOSE") for port in value.split()}
    assert exposed == {9000, 2525, 8001}
    data_dir = dockerfile.envs["MAILGATE_DATA_DIR"]
    assert data_dir in json.loads(instructions(dockerfile, "VOLUME")[-1])


def test_image_installs_the_package_with_its_templates(dockerfile: DockerfileParser) -> None:
    """The wheel carries templates/ (tests/test_wheel.py), so a plain install is enough."""
    copies = instructions(dockerfile, "COPY")
    assert "service ./service" in copies and "templates ./templates" in copies
    runs = instructions(dockerfile, "RUN")
    assert any("pip install ." in run for run in runs)
    assert not any("pip install -e" in run for run in runs)
