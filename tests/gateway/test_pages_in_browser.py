"""The approver's and the operator's pages in a real headless Chromium: click, don't POST."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from browsers import headless_chromium
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait
from support import ARTICLE, local, wait_for_state

pytestmark = pytest.mark.browser


@pytest.fixture
def browser() -> Iterator[webdriver.Chrome]:
    with headless_chromium() as driver:
        yield driver


async def test_approver_rejects_with_a_reason_then_approves_by_clicking(
    start_mailgate, page_server, browser
):
    mailgate = await start_mailgate(MAILGATE_API_TOKEN="sesame")
    base = f"http://127.0.0.1:{mailgate.app.http_port}"
    body = {"url": page_server.base + "/article", "email": "ivy@example.com"}
    headers = {"authorization": "Bearer sesame"}
    request_id = (await mailgate.client.post("/requests", json=body, headers=headers)).json()["id"]
    first = await mailgate.notifier.wait_for(1)

    await asyncio.to_thread(browser.get, base + local(first.decide_url) + "?verdict=reject")
    assert "Review this summary" in await asyncio.to_thread(lambda: browser.page_source)
    reason = await asyncio.to_thread(browser.find_element, By.ID, "reason")
    await asyncio.to_thread(reason.send_keys, "Mention the sea stars.")
    button = await asyncio.to_thread(browser.find_element, By.CSS_SELECTOR, "button.reject")
    await asyncio.to_thread(button.click)
    await _heading_shows(browser, "a new summary is on its way")

    second = await mailgate.notifier.wait_for(2)
    assert second.previous_reason == "Mention the sea stars."
    await asyncio.to_thread(browser.get, base + local(second.decide_url))
    button = await asyncio.to_thread(browser.find_element, By.CSS_SELECTOR, "button.approve")
    await asyncio.to_thread(button.click)
    await _heading_shows(browser, "Approved")
    await wait_for_state(mailgate.client, request_id, "approved", headers=headers)

    await asyncio.to_thread(browser.get, base + "/")
    assert (await asyncio.to_thread(lambda: browser.current_url)).endswith("/login")
    token = await asyncio.to_thread(browser.find_element, By.NAME, "token")
    await asyncio.to_thread(token.send_keys, "sesame")
    button = await asyncio.to_thread(browser.find_element, By.CSS_SELECTOR, "button.plain")
    await asyncio.to_thread(button.click)
    await asyncio.to_thread(WebDriverWait(browser, 10).until, EC.url_to_be(base + "/"))
    row = await asyncio.to_thread(lambda: browser.find_element(By.CSS_SELECTOR, ".requests li"))
    assert "approved" in row.text and "ivy@example.com" in row.text
    await asyncio.to_thread(row.find_element(By.CSS_SELECTOR, "a.src").click)
    await _heading_shows(browser, page_server.base + "/article")
    await asyncio.to_thread(browser.find_element(By.LINK_TEXT, "JSON").click)
    shown = await asyncio.to_thread(lambda: browser.find_element(By.TAG_NAME, "body").text)
    assert json.loads(shown)["state"] == "approved"


async def _heading_shows(browser: webdriver.Chrome, text: str) -> None:
    """Wait for the page a click navigates to; Selenium blocks and the server under test
    shares this event loop, so the waiting happens in a thread."""
    shown = EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), text)
    await asyncio.to_thread(WebDriverWait(browser, 10).until, shown)


PHONE = {"width": 375, "height": 812, "deviceScaleFactor": 1, "mobile": True}

#: Elements whose box reaches past the viewport's right (or left) edge, and the page's width.
OVERFLOW = """
const limit = document.documentElement.clientWidth;
const wide = [];
for (const element of document.querySelectorAll("body *")) {
  const box = element.getBoundingClientRect();
  if (box.width > 0 && (box.right > limit + 0.5 || box.left < -0.5)) {
    const where = `${Math.round(box.left)}..${Math.round(box.right)}`;
    wide.push(`${element.tagName}.${element.className}: ${where}`);
  }
}
return {limit: limit, page: document.documentElement.scrollWidth, wide: wide};
"""


async def test_pages_fit_a_375px_phone(start_mailgate, page_server, browser, screenshots):
    """The dashboard used to be a 466 px table in a 341 px card: Approver clipped, Rounds
    off-screen. Every operator and approver page must fit a phone without sideways scrolling."""
    mailgate = await start_mailgate()
    long_path = "/field-notes/" + "tide-pools-and-the-creatures-that-shelter-there-" * 3
    urls = [page_server.add(long_path, ARTICLE), page_server.base + "/article"]
    approvers = ["margarethe.vandenberg-oosterhuis@marine-biology.example.org", "ivy@example.com"]
    ids = []
    for url, approver in zip(urls, approvers, strict=True):
        body = {"url": url, "email": approver}
        ids.append((await mailgate.client.post("/requests", json=body)).json()["id"])
    first = await mailgate.notifier.wait_for(1)
    await mailgate.notifier.wait_for(2)
    reason = (
        "Please mention that visitors must stay on bare rock, as the ranger notes at "
        "https://example.org/parks/coastal/tide-pools/visitor-guidance-for-low-tide-walks say."
    )
    await mailgate.client.post(
        local(first.decide_url), data={"verdict": "reject", "reason": reason}
    )
    second = await mailgate.notifier.wait_for(3)
    for request_id in ids:
        await wait_for_state(mailgate.client, request_id, "waiting")

    base = f"http://127.0.0.1:{mailgate.app.http_port}"
    await asyncio.to_thread(browser.execute_cdp_cmd, "Emulation.setDeviceMetricsOverride", PHONE)
    pages = {
        "dashboard": "/",
        "request": f"/dashboard/{first.request_id}",
        "decide": local(second.decide_url),
    }
    for name, path in pages.items():
        await asyncio.to_thread(browser.get, base + path)
        fit = await asyncio.to_thread(browser.execute_script, OVERFLOW)
        assert fit["limit"] == PHONE["width"], fit
        assert fit["wide"] == [], f"{name} is wider than the phone: {fit}"
        assert fit["page"] <= fit["limit"], f"{name} scrolls sideways: {fit}"
        if name != "decide":
            await asyncio.to_thread(_screenshot, browser, screenshots / f"{name}-375px.png")
    await asyncio.to_thread(browser.get, base + pages["request"])
    text = await asyncio.to_thread(lambda: browser.find_element(By.TAG_NAME, "main").text)
    assert "Round 1" in text and "Round 2" in text and "visitors must stay on bare rock" in text


def _screenshot(browser: webdriver.Chrome, path: Path) -> None:
    """The whole page at phone width: the viewport grows to the page's height for the shot."""
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {**PHONE, "height": height})
    path.parent.mkdir(parents=True, exist_ok=True)
    assert browser.save_screenshot(str(path)), f"no screenshot written to {path}"
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", PHONE)
