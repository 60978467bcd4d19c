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
