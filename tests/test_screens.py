"""Phone and dark mode: the request email and the decision page in headless Chromium.

Each is loaded at 375 px (a phone, its viewport meta honoured) and 1280 px, in the light and the
dark color scheme, and measured: nothing is wider than the viewport, both buttons are inside it
and at least 44 px high, every piece of text is at least 16 px and has a contrast of at least
4.5:1 (WCAG AA) against what is behind it. The screenshots go to a temporary directory, or to
``MAILGATE_SCREENSHOT_DIR`` (``docs/screens`` refreshes the ones the README shows).
"""

from __future__ import annotations

import asyncio
import base64
import os
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from browsers import headless_chromium
from selenium import webdriver
from support import local

from service import tokens
from service.domain import Ask, workflow_id
from service.mail.compose import compose_request

pytestmark = pytest.mark.browser

WIDTHS = (375, 1280)
SCHEMES = ("light", "dark")
PHONE_HEIGHT = 812
DESKTOP_HEIGHT = 900
MIN_TEXT_PX = 16
MIN_BUTTON_PX = 44
MIN_CONTRAST = 4.5
NOW_MS = 1_767_261_600_000
URL = "https://blog.rust-lang.org/2025/02/20/Rust-1.85.0.html"
SUMMARY = (
    "The Rust project released version 1.85, which stabilises async closures and ships the 2024 "
    "edition of the language. The new edition changes how temporaries in tail expressions are "
    "dropped, reserves the gen keyword, and makes unsafe extern blocks explicit.\n\n"
    "The release notes stress that existing crates keep compiling: editions are opt-in per "
    "crate, and cargo fix migrates most code automatically."
)

MEASURE = """
const [minText, minContrast] = arguments;
const viewport = window.innerWidth;
const found = {width: document.documentElement.scrollWidth, viewport, outside: [], small: [],
               faint: [], buttons: []};
const rgba = (text) => (text.match(/[\\d.]+/g) || []).map(Number);
const luminance = ([r, g, b]) => {
  const channel = (v) => {
    v /= 255;
    return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
  };
  return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
};
const behind = (element) => {
  for (let node = element; node; node = node.parentElement) {
    const color = rgba(getComputedStyle(node).backgroundColor);
    if (color.length === 3 || color[3] > 0) return color;
  }
  return matchMedia('(prefers-color-scheme: dark)').matches ? [18, 18, 18] : [255, 255, 255];
};
const named = (el) => el.tagName.toLowerCase() + (el.className ? '.' + el.className : '') +
  ' "' + el.textContent.trim().slice(0, 30) + '"';
for (const el of document.body.querySelectorAll('*')) {
  const style = getComputedStyle(el);
  const box = el.getBoundingClientRect();
  if (style.visibility === 'hidden' || box.width === 0 || box.height === 0) continue;
  if (box.left < -0.5 || box.right > viewport + 0.5) {
    found.outside.push(named(el) + ' ' + box.right);
  }
  const text = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
  if (!text) continue;
  const size = parseFloat(style.fontSize);
  if (size < minText) found.small.push(named(el) + ' ' + size + 'px');
  const [fg, bg] = [luminance(rgba(style.color)), luminance(behind(el))];
  const contrast = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
  if (contrast < minContrast) found.faint.push(named(el) + ' ' + contrast.toFixed(2));
}
for (const el of document.querySelectorAll('a.button, button')) {
  const box = el.getBoundingClientRect();
  found.buttons.push({text: el.textContent.trim(), left: box.left, right: box.right,
                      height: box.height});
}
return found;
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[webdriver.Chrome]:
    with headless_chromium() as driver:
        yield driver


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chosen = os.environ.get("MAILGATE_SCREENSHOT_DIR")
    target = Path(chosen) if chosen else tmp_path_factory.mktemp("screens")
    target.mkdir(parents=True, exist_ok=True)
    return target


def show(browser: webdriver.Chrome, url: str, width: int, scheme: str) -> None:
    browser.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {
            "width": width,
            "height": PHONE_HEIGHT if width < 600 else DESKTOP_HEIGHT,
            "deviceScaleFactor": 1,
            "mobile": width < 600,
        },
    )
    browser.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": scheme}]},
    )
    browser.get(url)


def measure_and_shoot(browser: webdriver.Chrome, output: Path) -> dict[str, Any]:
    found: dict[str, Any] = browser.execute_script(MEASURE, MIN_TEXT_PX, MIN_CONTRAST)
    height = browser.execute_script("return document.documentElement.scrollHeight")
    shot = browser.execute_cdp_cmd(
        "Page.captureScreenshot",
        {
            "format": "png",
            "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": found["viewport"], "height": height, "scale": 1},
        },
    )
    output.write_bytes(base64.b64decode(shot["data"]))
    return found


def assert_legible(found: dict[str, Any], output: Path, buttons: tuple[str, str]) -> None:
    assert found["width"] <= found["viewport"], f"{found['width']} px wide: {found['outside']}"
    assert found["outside"] == []
    assert found["small"] == [], f"text under {MIN_TEXT_PX} px"
    assert found["faint"] == [], f"contrast under {MIN_CONTRAST}"
    shown = {b["text"]: b for b in found["buttons"]}
    for name in buttons:
        box = shown[name]
        assert box["left"] >= 0, f"{name} is cut off: {box}"
        assert box["right"] <= found["viewport"], f"{name} is cut off: {box}"
        assert box["height"] >= MIN_BUTTON_PX, f"{name} is {box['height']} px high"
    png = output.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">I", png[16:20])[0] == found["viewport"]


def request_email_html() -> str:
    request_id = workflow_id(URL, "ann@example.com")
    promise_id = f"{request_id}:5"
    link = tokens.mint(promise_id, "ann@example.com", secrets=["screen-key"], now_ms=NOW_MS)
    ask = Ask(
        request_id=request_id,
        promise_id=promise_id,
        first_promise_id=f"{request_id}:2",
        round=2,
        url=URL,
        approver="ann@example.com",
        summary=SUMMARY,
        previous_reason="Please mention the edition changes, not just the version number.",
        decide_url=f"https://mailgate.example.com/decide/{link}",
        expires_at=NOW_MS + 7 * 86_400_000,
    )
    message = compose_request(
        ask,
        sender="Mailgate <mailgate@example.com>",
        reply_domain="reply.example.com",
        secrets=["screen-key"],
        now=NOW_MS,
    )
    html = message.get_body(preferencelist=("html",))
    assert html is not None
    return str(html.get_content())


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("width", WIDTHS)
def test_the_request_email_reads_well(
    browser: webdriver.Chrome, shots: Path, tmp_path: Path, width: int, scheme: str
) -> None:
    page = tmp_path / "email.html"
    page.write_text(request_email_html(), encoding="utf-8")
    output = shots / f"email-{width}-{scheme}.png"

    show(browser, page.as_uri(), width, scheme)
    found = measure_and_shoot(browser, output)

    assert_legible(found, output, ("Approve", "Reject"))


async def test_the_decision_page_reads_well(
    start_mailgate: Any, page_server: Any, browser: webdriver.Chrome, shots: Path
) -> None:
    mailgate = await start_mailgate()
    page_server.add("/rust", f"<article><h1>Rust 1.85</h1><p>{SUMMARY}</p></article>")
    body = {"url": page_server.base + "/rust", "email": "ann@example.com"}
    await mailgate.client.post("/requests", json=body)
    ask = await mailgate.notifier.wait_for(1)
    url = f"http://127.0.0.1:{mailgate.app.http_port}{local(ask.decide_url)}?verdict=approve"

    for width in WIDTHS:
        for scheme in SCHEMES:
            output = shots / f"decide-{width}-{scheme}.png"
            await asyncio.to_thread(show, browser, url, width, scheme)
            found = await asyncio.to_thread(measure_and_shoot, browser, output)
            assert_legible(found, output, ("Approve", "Reject"))
