"""The approver's and the operator's pages in a real headless Chromium: click, don't POST."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from browsers import headless_chromium
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait
from support import local, wait_for_state

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
    row = await asyncio.to_thread(lambda: browser.find_element(By.CSS_SELECTOR, "tbody tr").text)
    assert "approved" in row and "ivy@example.com" in row


async def _heading_shows(browser: webdriver.Chrome, text: str) -> None:
    """Wait for the page a click navigates to; Selenium blocks and the server under test
    shares this event loop, so the waiting happens in a thread."""
    shown = EC.text_to_be_present_in_element((By.TAG_NAME, "h1"), text)
    await asyncio.to_thread(WebDriverWait(browser, 10).until, shown)
