"""The README documents every setting and command, and docs/http-api.md every route, so users
never have to read the code to configure or call Mailgate."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from starlette.routing import Route

from service import cli, config
from service.gateway.app import build_app

README = Path(__file__).resolve().parents[1] / "README.md"
HTTP_API = README.parent / "docs" / "http-api.md"
ANY_ID = re.compile(r"\{\w+_id\}")


def test_every_setting_is_documented_in_the_readme():
    text = README.read_text()
    missing = [name for name in config.variables() if f"`{name}`" not in text]
    assert missing == []


def test_every_route_is_documented_in_the_http_api_page():
    """As ``GET /requests/{id}``: the page calls every request id ``{id}``."""
    text = HTTP_API.read_text()
    routes = [r for r in build_app(gateway=None).routes if isinstance(r, Route)]  # type: ignore[arg-type]
    calls = {
        f"{method} {ANY_ID.sub('{id}', route.path)}"
        for route in routes
        for method in route.methods or ()
        if method != "HEAD"
    }
    assert sorted(call for call in calls if f"`{call}" not in text) == []


def test_every_command_is_in_the_readme_commands_block():
    block = _section(README.read_text(), "Commands").split("```", 2)[1]
    shown = {word for line in block.splitlines() for word in line.split("#")[0].split()}
    parser = cli._parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert sorted(name for name in commands.choices if name not in shown) == []


def test_readme_first_screen_has_the_two_commands():
    head = README.read_text().split("\n---\n", 1)[0]
    (block,) = re.findall(r"```sh\n(.*?)```", head, flags=re.DOTALL)
    assert [line.split()[0] for line in block.splitlines()] == ["scripts/try", "scripts/test"]
    ci = (README.parent / ".ci" / "run").read_text()
    assert "scripts/test" in ci


def test_readme_goes_in_the_order_a_newcomer_needs():
    """Two commands; then serve, submit, decide; then MailHog; the depth lives in docs/."""
    text = README.read_text()
    headings = re.findall(r"^## (.+)$", text, flags=re.MULTILINE)
    assert headings[:2] == ["Serve, submit, decide", "See the email: MailHog"]
    first_steps = _section(text, "Serve, submit, decide")
    assert first_steps.index("source .venv/bin/activate") < first_steps.index("mailgate serve")
    assert first_steps.index("mailgate serve") < first_steps.index("mailgate submit")
    assert "mailgate decide" in first_steps
    mailhog = _section(text, "See the email: MailHog")
    assert "docker run" in mailhog
    assert "go install github.com/mailhog/MailHog" in mailhog and "mailpit" in mailhog.lower()


def test_every_local_link_in_the_docs_leads_somewhere():
    root = README.parent
    for page in [README, *sorted((root / "docs").glob("*.md"))]:
        for target in re.findall(r"(?:\]\(|src=\")([^)\"#]+)", page.read_text()):
            if ":" not in target:
                assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
    linked = set(re.findall(r"\((docs/[^)#]+\.md)\)", README.read_text()))
    assert linked == {f"docs/{p.name}" for p in (root / "docs").glob("*.md")}


def _section(text: str, heading: str) -> str:
    return text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def test_readme_says_how_to_get_python_312_where_the_error_points():
    text = README.read_text()
    section = _section(text, "Python 3.12")
    assert "Debian 12" in section and "Ubuntu 22.04" in section
    assert "uv python install 3.12" in section and "pyenv install 3.12" in section
    finder = (README.parent / "scripts" / "find-python").read_text()
    assert r"README.md, \"Python 3.12\"" in finder, "the error points at that section"
