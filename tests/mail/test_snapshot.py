from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.browser
def test_snapshot_script_renders_the_request_email_to_png(tmp_path: Path) -> None:
    output = tmp_path / "email.png"

    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "render-email-snapshot.py"),
            "--output",
            str(output),
            "--width",
            "640",
            "--height",
            "700",
        ],
        check=True,
        timeout=120,
    )

    png = output.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (640, 700)
