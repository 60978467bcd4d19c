"""The README documents every setting, so users never have to read the code to configure."""

from __future__ import annotations

from pathlib import Path

from service import config

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_setting_is_documented_in_the_readme():
    text = README.read_text()
    missing = [name for name in config.variables() if f"`{name}`" not in text]
    assert missing == []


def test_readme_first_screen_has_the_two_commands():
    head = README.read_text().split("---", 1)[0]
    assert "scripts/try" in head and "scripts/test" in head
    ci = (README.parent / ".ci" / "run").read_text()
    assert "scripts/test" in ci


def test_readme_says_how_to_get_python_312_where_the_error_points():
    text = README.read_text()
    section = text.split("## Python 3.12", 1)[1].split("\n## ", 1)[0]
    assert "Debian 12" in section and "Ubuntu 22.04" in section
    assert "uv python install 3.12" in section and "pyenv install 3.12" in section
    finder = (README.parent / "scripts" / "find-python").read_text()
    assert r"README.md, \"Python 3.12\"" in finder, "the error points at that section"
