"""The browser fetcher with Debian's real headless Chromium, and the guarded proxy that is its
only way out, all on loopback."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import os
import signal
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import Sleeps, TableResolver

from service.errors import BlockedUrl, HostNotFound, UnusablePage
from service.steps.browser import BrowserFetcher, GuardedProxy
from service.steps.guard import Destination

JS_PAGE = """<!doctype html><html><head><title>Tides</title></head><body>
<nav>Home | About</nav><main id="app"></main>
<script>
  const p = document.createElement("p");
  p.textContent = "Written by JavaScript: the tide turns at " + (6 * 2) + " o'clock.";
  document.getElementById("app").appendChild(p);
</script></body></html>"""


@pytest.fixture
def make_browser(make_fetcher_of: Callable[..., Any]) -> Callable[..., BrowserFetcher]:
    return functools.partial(
        make_fetcher_of, BrowserFetcher, max_bytes=1_000_000, timeout_s=15.0, backoff_s=0.1
    )


@pytest.mark.browser
async def test_reads_text_written_by_javascript_and_reuses_one_browser(
    make_browser: Callable[..., BrowserFetcher], page_server: Any
) -> None:
    first_url = page_server.add("/js", JS_PAGE)
    second_url = page_server.add("/plain", "<p>A second page, same browser.</p>")
    browser = make_browser()

    first = await browser.fetch(first_url)
    session = browser.session_id
    second = await browser.fetch(second_url)

    assert first == "Tides\nWritten by JavaScript: the tide turns at 12 o'clock."
    assert second == "A second page, same browser."
    assert session is not None
    assert browser.session_id == session


@pytest.mark.browser
async def test_every_request_goes_through_the_guard_and_the_page_host_is_looked_up_once(
    make_browser: Callable[..., BrowserFetcher], page_server: Any
) -> None:
    """Chromium cannot resolve ``*.test`` itself: the page and its script load only because
    the guarded proxy resolved them, and the page's host was not looked up a second time."""
    port = page_server.server.server_address[1]
    page_server.add(
        "/page",
        f'<p id="x">static</p><script src="http://assets.test:{port}/app.js"></script>',
    )
    page_server.add(
        "/app.js",
        "document.getElementById('x').textContent = 'from a script on another host';",
        content_type="application/javascript",
    )
    resolver = TableResolver({"page.test": "127.0.0.1", "assets.test": "127.0.0.1"})

    text = await make_browser(resolve=resolver).fetch(f"http://page.test:{port}/page")

    assert text == "from a script on another host"
    assert resolver.lookups.count("page.test") == 1
    assert resolver.lookups.count("assets.test") == 1


@pytest.mark.browser
async def test_a_redirect_to_a_host_that_does_not_resolve_fails_at_once(
    make_browser: Callable[..., BrowserFetcher], page_server: Any, sleeps: Sleeps
) -> None:
    start = page_server.redirect("/go", "https://example.invalid/next")

    with pytest.raises(HostNotFound, match=r"cannot resolve host example\.invalid"):
        await make_browser().fetch(start)

    assert page_server.hits["/go"] >= 1
    assert sleeps == []


@pytest.mark.browser
async def test_unusable_pages_get_the_same_clear_errors_as_over_http(
    make_browser: Callable[..., BrowserFetcher], page_server: Any, sleeps: Sleeps
) -> None:
    cases = {
        page_server.add("/missing", "<p>no</p>", status=404): "127.0.0.1 answered 404",
        page_server.add("/report", b"%PDF-1.7", content_type="application/pdf"): (
            "127.0.0.1 sent application/pdf, not a web page"
        ),
        page_server.add("/blank", "<script>app()</script><nav>Home</nav>"): "no visible text",
        page_server.add("/huge", "<p>" + "z" * 20_000 + "</p>"): "larger than 10000 bytes",
    }
    browser = make_browser(max_bytes=10_000)

    for url, message in cases.items():
        with pytest.raises(UnusablePage) as caught:
            await browser.fetch(url)
        assert message in str(caught.value)
    assert sleeps == []


def children_of(parent: int) -> list[int]:
    """Processes whose parent is ``parent`` (here: the Chromium that chromedriver started)."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent:
            children.append(int(stat.parent.name))
    return children


@pytest.mark.browser
async def test_a_dead_browser_is_replaced_on_the_next_attempt(
    make_browser: Callable[..., BrowserFetcher], page_server: Any
) -> None:
    url = page_server.add("/again", "<p>Still here.</p>")
    browser = make_browser()
    assert await browser.fetch(url) == "Still here."
    old_session = browser.session_id
    [chromium] = children_of(browser._driver.service.process.pid)  # type: ignore[union-attr]
    os.kill(chromium, signal.SIGKILL)

    assert await browser.fetch(url) == "Still here."
    assert browser.session_id not in (None, old_session)

    new_driver = browser._driver.service.process  # type: ignore[union-attr]
    await browser.close()
    assert new_driver.poll() is not None


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
async def test_refuses_private_hosts_without_starting_chromium(
    make_browser: Callable[..., BrowserFetcher], page_server: Any, host: str, sleeps: Sleeps
) -> None:
    url = page_server.add("/secret", "<p>internal</p>").replace("127.0.0.1", host)
    browser = make_browser(allow_private=False)

    with pytest.raises(BlockedUrl, match="loopback"):
        await browser.fetch(url)

    assert page_server.hits == {}
    assert browser.session_id is None
    assert sleeps == []


async def test_dns_failure_fails_fast_without_starting_chromium(
    make_browser: Callable[..., BrowserFetcher], sleeps: Sleeps
) -> None:
    resolver = TableResolver({})
    browser = make_browser(resolve=resolver)
    started = time.monotonic()

    with pytest.raises(HostNotFound, match=r"cannot resolve host example\.invalid"):
        await browser.fetch("http://example.invalid/")

    assert time.monotonic() - started < 5
    assert resolver.lookups == ["example.invalid"]
    assert sleeps == []
    assert browser.session_id is None


# -- the guarded proxy, spoken to directly -----------------------------------------------


@pytest.fixture
async def make_proxy() -> AsyncIterator[Callable[..., Any]]:
    proxies: list[GuardedProxy] = []

    async def make(*, allow_private: bool) -> GuardedProxy:
        proxy = GuardedProxy(allow_private=allow_private, timeout_s=5)
        await proxy.start()
        proxies.append(proxy)
        return proxy

    yield make
    for proxy in proxies:
        await proxy.stop()


def navigating_to(url: str) -> Destination:
    parsed = httpx.URL(url)
    return Destination(
        url=parsed,
        host=parsed.host,
        port=parsed.port or 80,
        addresses=(ipaddress.ip_address("127.0.0.1"),),
    )


async def exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    async with asyncio.timeout(5):
        answer = await reader.read()
    writer.close()
    return answer


@pytest.mark.parametrize(
    "request_head",
    [
        b"GET http://127.0.0.1:{port}/article HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n",
        b"GET http://localhost:{port}/article HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n",
        b"CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n",
        b"CONNECT [::1]:{port} HTTP/1.1\r\nHost: [::1]:{port}\r\n\r\n",
    ],
)
async def test_the_proxy_refuses_private_targets_without_the_flag(
    make_proxy: Callable[..., Any], page_server: Any, request_head: bytes
) -> None:
    port = page_server.server.server_address[1]
    proxy = await make_proxy(allow_private=False)
    proxy.begin(navigating_to("http://public.example/"))

    answer = await exchange(proxy.port, request_head.replace(b"{port}", str(port).encode()))

    assert answer.startswith(b"HTTP/1.1 403")
    assert b"loopback address" in answer
    assert page_server.hits == {}
    [refusal] = proxy.refused.values()
    assert isinstance(refusal, BlockedUrl)


async def test_the_proxy_forwards_nothing_between_navigations(
    make_proxy: Callable[..., Any], page_server: Any
) -> None:
    proxy = await make_proxy(allow_private=True)
    request = f"GET {page_server.base}/article HTTP/1.1\r\nHost: x\r\n\r\n".encode()

    answer = await exchange(proxy.port, request)

    assert answer.startswith(b"HTTP/1.1 403")
    assert b"no page is being fetched" in answer
    assert page_server.hits == {}


async def test_the_proxy_forwards_one_request_per_connection(
    make_proxy: Callable[..., Any], page_server: Any
) -> None:
    """A second request on a kept-alive client connection must not reach the first upstream
    unchecked; the proxy closes after one answer."""
    proxy = await make_proxy(allow_private=True)
    proxy.begin(navigating_to(page_server.base + "/article"))
    one = f"GET {page_server.base}/article HTTP/1.1\r\nHost: x\r\nProxy-Connection: keep-alive\r\n"
    one += "\r\n"

    answer = await exchange(proxy.port, (one + one.replace("/article", "/other")).encode())

    assert answer.startswith(b"HTTP/1.0 200") or answer.startswith(b"HTTP/1.1 200")
    assert b"Tide pools are rocky hollows" in answer
    assert page_server.hits == {"/article": 1}
