"""A plain `pip install .` gives a service that renders: the wheel carries the templates.

The wheel is built from the files the repository ships, installed with ``--no-deps`` into a
fresh venv (no network needed), and run from a directory far from the source tree: the
request email and every page must render from what was installed.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pytest
from processes import ROOT, Process, clean_env
from smtp_sink import free_port
from support import REPLY_DOMAIN, local, wait_for_state

pytestmark = pytest.mark.slow

SHIPPED = ("pyproject.toml", "README.md", "service", "templates")

#: Every page template, and text only that page shows; base.html is the frame of all of them.
PAGES = {
    "login.html": "Enter the API token",
    "dashboard.html": "alice@example.com",
    "request.html": "Round 1",
    "decide.html": "Review this summary",
    "done.html": "Approved — thank you",
    "error.html": "This link is not valid",
}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    source.mkdir()
    for name in SHIPPED:
        origin = ROOT / name
        if origin.is_dir():
            ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
            shutil.copytree(origin, source / name, ignore=ignore)
        else:
            shutil.copy2(origin, source / name)
    _run(
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "--quiet",
        "--no-deps",
        "--no-build-isolation",
        "--wheel-dir",
        str(work / "dist"),
        str(source),
    )
    (built,) = (work / "dist").glob("mailgate-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel and nothing of the source tree.

    The tests themselves run in a venv, whose packages ``--system-site-packages`` does not
    reach (it reaches the base interpreter's), so a ``.pth`` file lends the venv this one's
    dependencies; the editable install of ``service`` in there only works through its own
    ``.pth`` finder, which a plain path entry does not run.
    """
    where = tmp_path_factory.mktemp("venv") / "venv"
    _run(sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(where))
    python = where / "bin" / "python"
    purelib = _run(str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))")
    Path(purelib.strip(), "test-dependencies.pth").write_text("\n".join(site.getsitepackages()))
    _run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        str(python),
        "install",
        "--quiet",
        "--no-deps",
        "--no-index",
        str(wheel),
    )
    return where


def test_the_wheel_holds_every_module_and_template(wheel: Path):
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "service").rglob("*.py")}
    templates = {
        "service/templates/" + p.relative_to(ROOT / "templates").as_posix()
        for p in (ROOT / "templates").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    assert modules - names == set()
    assert templates - names == set()
    assert "service/engine/schema/0001_init.sql" in names


async def test_installed_mailgate_renders_the_email_and_every_page(
    venv: Path, tmp_path: Path, start_sink, page_server
):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    imported = _run(
        str(venv / "bin" / "python"), "-c", "import service; print(service.__file__)", cwd=elsewhere
    )
    assert Path(imported.strip()).is_relative_to(venv)

    sink = await start_sink()
    port = free_port()
    env = clean_env(
        MAILGATE_DATA_DIR=str(tmp_path / "data"),
        MAILGATE_HTTP_PORT=str(port),
        MAILGATE_PUBLIC_URL=f"http://127.0.0.1:{port}",
        MAILGATE_API_TOKEN="installed-token",
        MAILGATE_ALLOW_PRIVATE_URLS="1",
        MAILGATE_SUMMARIZER="extractive",
        MAILGATE_NOTIFIER="smtp",
        MAILGATE_SMTP_PORT=str(sink.port),
        MAILGATE_FROM="Mailgate <mailgate@mailgate.test>",
        MAILGATE_REPLY_DOMAIN=REPLY_DOMAIN,
        MAILGATE_INBOUND_PORT=str(free_port()),
    )
    serve = Process(
        "serve",
        env,
        tmp_path / "serve.log",
        mailgate=(str(venv / "bin" / "mailgate"),),
        cwd=elsewhere,
    )
    serve.start()
    rendered: dict[str, str] = {}
    try:
        base = f"http://127.0.0.1:{port}"
        await serve.wait_http(base + "/healthz")
        async with httpx.AsyncClient(base_url=base, timeout=10) as browser:
            rendered["login.html"] = (await browser.get("/login")).text
            api = {"authorization": "Bearer installed-token"}
            body = {"url": page_server.base + "/article", "email": "alice@example.com"}
            request_id = (await browser.post("/requests", json=body, headers=api)).json()["id"]
            await wait_for_state(browser, request_id, "waiting", headers=api)

            (email,) = sink.received
            text = email.message.get_body(preferencelist=("plain",)).get_content()
            html = email.message.get_body(preferencelist=("html",)).get_content()
            assert "Tide pools" in text and "Tide pools" in html
            decide = re.search(r"http://\S+/decide/[\w.-]+", text)
            assert decide is not None

            rendered["dashboard.html"] = (await browser.get("/", headers=api)).text
            page = await browser.get(f"/dashboard/{request_id}", headers=api)
            rendered["request.html"] = page.text
            rendered["decide.html"] = (await browser.get(local(decide.group()))).text
            done = await browser.post(local(decide.group()), data={"verdict": "approve"})
            rendered["done.html"] = done.text
            rendered["error.html"] = (await browser.get("/decide/not-a-token")).text
    finally:
        assert serve.terminate() == 0, serve.output()[-3000:]

    pages = {p.name for p in (ROOT / "templates" / "pages").glob("*.html")} - {"base.html"}
    assert set(PAGES) == pages, "a page template has no check here"
    for name, marker in PAGES.items():
        assert marker in rendered[name], f"{name} did not render:\n{rendered[name][:500]}"
    assert not (elsewhere / ".mailgate").exists()

    sample = await asyncio.to_thread(
        _run,
        str(venv / "bin" / "mailgate"),
        "mail-test",
        "--to",
        "ops@example.com",
        cwd=elsewhere,
        env=env,
    )
    assert "sample request email sent" in sample
    assert sink.received[-1].message["To"] == "ops@example.com"


def _run(*command: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout
