"""Files from ``../shared`` (beside the repository), which a user's clone does not have.

A test that needs one asks ``shared_file``: in a bare clone it skips with a one-line reason;
where ``MAILGATE_REQUIRE_SHARED=1`` (``.ci/run`` sets it, CI has ``../shared``) a missing file
fails the test instead, so CI can never pass by skipping.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
REQUIRE_VARIABLE = "MAILGATE_REQUIRE_SHARED"


def shared_file(relative: str) -> Path:
    path = SHARED / relative
    if path.exists():
        return path
    reason = f"needs ../shared/{relative}, which is not beside this clone"
    if os.environ.get(REQUIRE_VARIABLE) == "1":
        pytest.fail(f"{reason} ({REQUIRE_VARIABLE}=1)")
    pytest.skip(reason)
