"""scripts/bootstrap finds a Python 3.12 where people install one, or says in one line how to
get one: Debian 12 and Ubuntu 22.04 ship older ones as ``python3``."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from processes import ROOT

#: A real interpreter new enough, to install into the places the script looks.
NEW_ENOUGH = os.path.realpath(sys.executable)


def system_wide_python() -> bool:
    """Whether the places outside HOME the script looks in hold one: then "none" cannot show."""
    found = [
        *Path("/usr/local/bin").glob("python3.1[2-9]"),
        *Path("/opt").glob("python*/bin/python3"),
    ]
    return bool(found)


@pytest.fixture
def machine(tmp_path: Path) -> dict[str, str]:
    """An environment with only an old ``python3`` on PATH and an empty home."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    old = bin_dir / "python3"
    old.write_text("#!/bin/sh\nexit 1\n")  # fails the version check, as Python 3.11 does
    old.chmod(0o755)
    (tmp_path / "home").mkdir()
    return {"PATH": str(bin_dir), "HOME": str(tmp_path / "home")}


def find_python(env: dict[str, str], script: Path = ROOT / "scripts" / "find-python"):
    return subprocess.run(
        ["/bin/bash", str(script)], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def install(path: Path) -> Path:
    path.parent.mkdir(parents=True)
    path.symlink_to(NEW_ENOUGH)
    return path


def test_without_a_new_python_it_says_so_in_one_line(machine: dict[str, str]):
    if system_wide_python():
        pytest.skip("this machine has a Python >= 3.12 installed system-wide")
    found = find_python(machine)
    assert found.returncode == 1
    assert found.stdout == ""
    assert len(found.stderr.splitlines()) == 1
    assert "Python 3.12 or newer" in found.stderr and "MAILGATE_PYTHON" in found.stderr


@pytest.mark.parametrize(
    "place",
    [
        ".pyenv/versions/3.12.8/bin/python3",
        ".local/share/uv/python/cpython-3.12.8-linux-x86_64-gnu/bin/python3",
        ".local/bin/python3.12",
        ".asdf/installs/python/3.13.1/bin/python3",
    ],
)
def test_it_finds_python_where_pyenv_uv_and_asdf_put_it(machine: dict[str, str], place: str):
    python = install(Path(machine["HOME"]) / place)
    found = find_python(machine)
    assert found.returncode == 0, found.stderr
    assert found.stdout.strip() == str(python)


def test_it_honours_xdg_data_home_for_uv(machine: dict[str, str], tmp_path: Path):
    python = install(tmp_path / "xdg" / "uv/python/cpython-3.12.3-linux-x86_64-gnu/bin/python3")
    found = find_python({**machine, "XDG_DATA_HOME": str(tmp_path / "xdg")})
    assert found.stdout.strip() == str(python)


def test_mailgate_python_names_one_and_is_checked(machine: dict[str, str], tmp_path: Path):
    python = install(tmp_path / "custom" / "python")
    assert find_python({**machine, "MAILGATE_PYTHON": str(python)}).stdout.strip() == str(python)
    old = find_python({**machine, "MAILGATE_PYTHON": str(Path(machine["PATH"]) / "python3")})
    assert old.returncode == 1 and len(old.stderr.splitlines()) == 1
    assert "is not a Python 3.12 or newer" in old.stderr


def test_bootstrap_without_a_new_python_stops_with_that_one_line(
    machine: dict[str, str], tmp_path: Path
):
    """It used to go on with an empty interpreter name: "line 19: : command not found"."""
    if system_wide_python():
        pytest.skip("this machine has a Python >= 3.12 installed system-wide")
    clone = tmp_path / "clone"
    (clone / "scripts").mkdir(parents=True)
    for name in ("bootstrap", "find-python"):
        shutil.copy2(ROOT / "scripts" / name, clone / "scripts" / name)
    shutil.copy2(ROOT / "pyproject.toml", clone / "pyproject.toml")
    tools = Path(machine["PATH"])  # what the scripts run before they look for Python
    for tool in ("bash", "dirname"):
        (tools / tool).symlink_to(shutil.which(tool) or f"/usr/bin/{tool}")
    done = subprocess.run(
        ["/bin/bash", str(clone / "scripts" / "bootstrap")],
        env=machine,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        line for line in done.stderr.splitlines() if line.startswith("mailgate: Python 3.12")
    ]
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert not (clone / ".venv").exists()
