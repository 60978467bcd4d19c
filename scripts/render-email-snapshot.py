"""Regenerate docs/email-request.png: what an approver sees, rendered by headless Chromium.

The email is composed by the real code path (``compose_request``) for a second-round ask with
a reply domain, so the picture shows every part of the message. Run after changing the
templates:

    .venv/bin/python scripts/render-email-snapshot.py
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

from service.domain import Ask, workflow_id
from service.mail.compose import compose_request

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
SENT_AT_MS = 1_767_261_600_000  # 2026-01-01 10:00 UTC: a fixed time keeps the picture stable
WEEK_MS = 7 * 86_400_000

SUMMARY = """\
The Rust project released version 1.85, which stabilises async closures and ships the 2024 \
edition of the language. The new edition changes how temporaries in tail expressions are \
dropped, reserves the gen keyword, and makes unsafe extern blocks explicit.

The release notes stress that existing crates keep compiling: editions are opt-in per crate, \
and cargo fix migrates most code automatically. Tooling updates include rustfmt style editions \
and a faster incremental build for large workspaces."""


def sample_html() -> str:
    url = "https://blog.rust-lang.org/2025/02/20/Rust-1.85.0.html"
    request_id = workflow_id(url, "ann@example.com")
    ask = Ask(
        request_id=request_id,
        promise_id=f"{request_id}:5",
        first_promise_id=f"{request_id}:2",
        round=2,
        url=url,
        approver="ann@example.com",
        summary=SUMMARY,
        previous_reason="Please mention the edition changes, not just the version number.",
        decide_url="http://localhost:9000/decide/sample-token",
        expires_at=SENT_AT_MS + WEEK_MS,
    )
    message = compose_request(
        ask,
        sender="Mailgate <mailgate@localhost>",
        reply_domain="reply.example.com",
        secrets=["snapshot-only-secret"],
        now=SENT_AT_MS,
    )
    html = message.get_body(preferencelist=("html",))
    assert html is not None, "the request has no HTML part"
    return str(html.get_content())


def screenshot(html: str, output: Path, width: int, height: int) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        page = Path(scratch) / "email.html"
        page.write_text(html, encoding="utf-8")
        subprocess.run(
            [
                CHROMIUM,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--no-first-run",
                f"--user-data-dir={scratch}/profile",
                "--force-device-scale-factor=1",
                f"--window-size={width},{height}",
                f"--screenshot={output}",
                page.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "email-request.png")
    parser.add_argument("--width", type=int, default=760)
    parser.add_argument("--height", type=int, default=820)
    args = parser.parse_args()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    screenshot(sample_html(), args.output.resolve(), args.width, args.height)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
