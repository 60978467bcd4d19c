"""Fetch pages with Debian's headless Chromium, for sites that write their text with JavaScript.

One Chromium (through ``/usr/bin/chromedriver``, never Selenium Manager) lives as long as the
fetcher and serves every download, one page at a time, on a single worker thread so Selenium's
blocking calls never touch the event loop. A driver that dies is discarded and the next attempt
starts a fresh one.

**The SSRF guard for a browser.** Chromium resolves names and loads subresources, redirects and
XHRs itself, so checking the page's URL up front is not enough. ``--host-resolver-rules`` pinned
to the checked address would have to change per navigation, which means a new Chromium per URL,
and it would also break every subresource on another host. Instead Chromium's only way out is
``GuardedProxy``, a small forward proxy on 127.0.0.1 running on the event loop: every request
(plain HTTP, and CONNECT for HTTPS and WebSockets) goes through ``guard.check_url`` and connects
to the address just checked, exactly like ``HttpFetcher``. ``--proxy-bypass-list=<-loopback>``
makes loopback targets use the proxy too, ``--host-resolver-rules`` leaves Chromium unable to
resolve any name on its own (a leak would fail, not bypass), QUIC is off and WebRTC may not send
unproxied UDP. The page's own host is checked before Chromium is touched (a clear
``HostNotFound``/``BlockedUrl``), and that check is pinned in the proxy so the main document is
not looked up twice. A hop the proxy refuses is remembered, and if the navigation ends there the
fetch raises that refusal instead of returning the proxy's error page.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import urllib3
from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.wait import WebDriverWait

from service import retry
from service.errors import BlockedUrl, HostNotFound, Permanent, Transient, UnusablePage
from service.retry import Sleep
from service.steps.fetch import HTML_TYPES, TEXT_TYPES, extract_text, with_retries
from service.steps.guard import Destination, Resolver, check_url, system_resolve

logger = logging.getLogger(__name__)

CHROMIUM_FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
    "--disable-extensions",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--no-pings",
    "--disable-features=Translate,OptimizationHints,MediaRouter,AutofillServerCommunication",
    "--proxy-bypass-list=<-loopback>",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
    "--webrtc-ip-handling-policy=disable_non_proxied_udp",
)
CHROMIUM_PREFS = {"download_restrictions": 3}
PAGE_FACTS_JS = """
const nav = performance.getEntriesByType('navigation')[0];
return {url: location.href, type: document.contentType,
        status: nav ? nav.responseStatus : 0, size: nav ? nav.decodedBodySize : 0};
"""
PROXY_HEAD_MAX_BYTES = 64 * 1024
_HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"proxy-authorization", b"te", b"upgrade"}
)
_NET_ERROR = re.compile(r"ERR_[A-Z_]+")
_DRIVER_FAILURES = (WebDriverException, urllib3.exceptions.HTTPError, OSError)

Origin = tuple[str, int]


@dataclass(frozen=True)
class Page:
    url: str
    content_type: str
    status: int
    size: int
    html: str
    error: str | None = None


class GuardedProxy:
    """A forward proxy that applies the SSRF guard to every request Chromium makes."""

    def __init__(
        self, *, allow_private: bool, timeout_s: float, resolve: Resolver = system_resolve
    ) -> None:
        self._allow_private = allow_private
        self._timeout_s = timeout_s
        self._resolve = resolve
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._pins: dict[Origin, Destination] = {}
        self.refused: dict[Origin, Permanent] = {}

    @property
    def port(self) -> int:
        assert self._server is not None
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._handle, "127.0.0.1", 0, limit=PROXY_HEAD_MAX_BYTES
            )

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        await self._server.wait_closed()
        self._server = None

    def begin(self, destination: Destination) -> None:
        """Open for one navigation: forget old refusals, reuse the page host's check."""
        self.refused.clear()
        self._pins = {(destination.host, destination.port): destination}

    def end(self) -> None:
        """Closed between navigations: Chromium's background chatter and a parked page's
        leftover timers get nowhere."""
        self._pins = {}

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            method, target, _ = head.split(b"\r\n", 1)[0].split(b" ", 2)
            if method == b"CONNECT":
                await self._tunnel(target.decode("latin-1"), reader, writer)
            else:
                await self._forward(head, target.decode("latin-1"), reader, writer)
        except (
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            ValueError,
            ConnectionError,
            TimeoutError,
        ):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _tunnel(
        self, authority: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        upstream = await self._connect(f"https://{authority}/", writer)
        if upstream is None:
            return
        up_reader, up_writer = upstream
        try:
            writer.write(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            await _relay((reader, up_writer), (up_reader, writer))
        finally:
            up_writer.close()

    async def _forward(
        self, head: bytes, target: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Forward one request with ``Connection: close``, so a kept-alive client connection
        can never carry a second, unchecked request to this upstream."""
        if not target.startswith("http://"):
            await _answer(writer, 400, "this proxy forwards absolute http:// URLs only")
            return
        request_line, *lines = head.removesuffix(b"\r\n\r\n").split(b"\r\n")
        fields = [(line.split(b":", 1)[0].strip().lower(), line) for line in lines]
        if any(name == b"transfer-encoding" for name, _ in fields):
            await _answer(writer, 411, "chunked request bodies are not forwarded")
            return
        length = next(
            (int(line.split(b":", 1)[1]) for name, line in fields if name == b"content-length"), 0
        )
        upstream = await self._connect(target, writer)
        if upstream is None:
            return
        up_reader, up_writer = upstream
        method, _, version = request_line.split(b" ", 2)
        kept = [line for name, line in fields if name not in _HOP_BY_HOP]
        origin_form = b" ".join([method, httpx.URL(target).raw_path, version])
        try:
            up_writer.write(b"\r\n".join([origin_form, *kept, b"Connection: close", b"", b""]))
            if length:
                up_writer.write(await reader.readexactly(length))
            await _relay((up_reader, writer))
        finally:
            up_writer.close()

    async def _connect(
        self, url: str, writer: asyncio.StreamWriter
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """Check ``url``'s host, then connect to a checked address; answer the client on refusal."""
        if not self._pins:
            await _answer(writer, 403, "no page is being fetched")
            return None
        origin = _origin(url)
        try:
            destination = self._pins.get(origin) or await check_url(
                url, allow_private=self._allow_private, resolve=self._resolve
            )
        except Permanent as exc:
            self.refused[origin] = exc
            logger.debug("browser request refused: %s", exc)
            await _answer(writer, 403 if isinstance(exc, BlockedUrl) else 502, str(exc))
            return None
        for address in destination.addresses:
            try:
                async with asyncio.timeout(self._timeout_s):
                    return await asyncio.open_connection(str(address), destination.port)
            except (OSError, TimeoutError):
                continue
        await _answer(writer, 502, f"cannot connect to {destination.host}")
        return None


class BrowserFetcher:
    """Headless Chromium via Selenium, for pages that need JavaScript to show their text."""

    name = "browser"

    def __init__(
        self,
        *,
        allow_private: bool,
        max_bytes: int,
        timeout_s: float,
        attempts: int,
        backoff_s: float = retry.FETCH.first_s,
        chromium: str = "/usr/bin/chromium",
        chromedriver: str = "/usr/bin/chromedriver",
        sleep: Sleep = asyncio.sleep,
        resolve: Resolver = system_resolve,
    ) -> None:
        self._allow_private = allow_private
        self._max_bytes = max_bytes
        self._timeout_s = timeout_s
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._chromium = chromium
        self._chromedriver = chromedriver
        self._sleep = sleep
        self._resolve = resolve
        self._proxy = GuardedProxy(
            allow_private=allow_private, timeout_s=timeout_s, resolve=resolve
        )
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mailgate-browser")
        self._one_page = asyncio.Lock()
        self._driver: webdriver.Chrome | None = None
        self._profile: str | None = None
        self._closed = False

    @property
    def session_id(self) -> str | None:
        """The WebDriver session in use; it stays the same while the browser lives."""
        return self._driver.session_id if self._driver is not None else None

    async def fetch(self, url: str) -> str:
        host = httpx.URL(url).host or url
        return await with_retries(
            lambda: self._fetch_once(url),
            host=host,
            attempts=self._attempts,
            backoff_s=self._backoff_s,
            sleep=self._sleep,
        )

    async def close(self) -> None:
        async with self._one_page:
            if self._closed:
                return
            self._closed = True
            await asyncio.get_running_loop().run_in_executor(self._executor, self._discard)
            self._executor.shutdown(wait=True)
            await self._proxy.stop()

    async def _fetch_once(self, url: str) -> str:
        destination = await check_url(url, allow_private=self._allow_private, resolve=self._resolve)
        async with self._one_page:
            await self._proxy.start()
            self._proxy.begin(destination)
            try:
                page = await asyncio.get_running_loop().run_in_executor(
                    self._executor, self._load, str(destination.url)
                )
            finally:
                self._proxy.end()
        refused = self._proxy.refused.get(_origin(page.url))
        if refused is not None:
            raise refused
        if page.error is not None:
            raise Transient(f"the browser could not load {page.url}: {page.error}")
        return await asyncio.to_thread(self._text, page)

    def _text(self, page: Page) -> str:
        host = httpx.URL(page.url).host
        answer = f"{host} answered {page.status}"
        if page.status in (408, 429) or page.status >= 500:
            raise Transient(answer)
        if page.status and not 200 <= page.status < 300:
            raise UnusablePage(answer)
        if page.content_type not in HTML_TYPES | TEXT_TYPES:
            raise UnusablePage(f"{host} sent {page.content_type}, not a web page")
        if page.size > self._max_bytes:
            raise UnusablePage(f"the page at {page.url} is larger than {self._max_bytes} bytes")
        text = extract_text(page.html)
        if not text:
            raise UnusablePage(f"the page at {page.url} has no visible text")
        return text

    def _load(self, url: str) -> Page:
        """Runs on the browser thread: navigate, wait until ready, read, then park on a blank
        page. A net error comes back as a page whose ``url`` is where the navigation stopped
        (chromedriver reports the failed URL, even past redirects), so the caller can match it
        against the proxy's refusals."""
        driver = self._driver or self._start_driver()
        try:
            page = self._navigate(driver, url)
        except TimeoutException as exc:
            self._park(driver)
            raise Transient(f"the page did not finish loading within {self._timeout_s:g}s") from exc
        except WebDriverException as exc:
            message = _first_line(exc)
            if "net::ERR_" not in message:
                self._restart_if_dead(driver)
                raise Transient(f"the browser failed: {message}") from exc
            page = Page(
                url=driver.current_url, content_type="", status=0, size=0, html="", error=message
            )
        except _DRIVER_FAILURES as exc:
            self._restart_if_dead(driver)
            raise Transient(f"the browser failed: {_first_line(exc)}") from exc
        self._park(driver)
        if "net::ERR_NAME_NOT_RESOLVED" in (page.error or ""):
            raise HostNotFound(httpx.URL(page.url).host)
        return page

    def _navigate(self, driver: webdriver.Chrome, url: str) -> Page:
        driver.get(url)
        WebDriverWait(driver, self._timeout_s).until(
            lambda d: d.execute_script("return document.readyState") == "complete"
        )
        facts = driver.execute_script(PAGE_FACTS_JS)
        html = driver.page_source
        error = None
        if facts["url"].startswith("chrome-error:"):
            code = _NET_ERROR.search(html)
            error = f"net::{code.group(0)}" if code else "Chromium showed an error page"
        return Page(
            url=driver.current_url,
            content_type=facts["type"],
            status=facts["status"],
            size=facts["size"],
            html=html,
            error=error,
        )

    def _restart_if_dead(self, driver: webdriver.Chrome) -> None:
        if not self._alive(driver):
            logger.warning("headless Chromium stopped responding; the next attempt starts anew")
            self._discard()

    def _start_driver(self) -> webdriver.Chrome:
        self._profile = tempfile.mkdtemp(prefix="mailgate-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = self._chromium
        for flag in (
            *CHROMIUM_FLAGS,
            f"--user-data-dir={self._profile}",
            f"--proxy-server=http://127.0.0.1:{self._proxy.port}",
        ):
            options.add_argument(flag)
        options.add_experimental_option("prefs", CHROMIUM_PREFS)
        service = Service(executable_path=self._chromedriver, log_output=subprocess.DEVNULL)
        driver = webdriver.Chrome(service=service, options=options)
        driver.set_page_load_timeout(self._timeout_s)
        driver.set_script_timeout(self._timeout_s)
        self._driver = driver
        return driver

    def _park(self, driver: webdriver.Chrome) -> None:
        """Stop the page's scripts from making requests after we are done with it."""
        try:
            driver.get("about:blank")
        except _DRIVER_FAILURES:
            self._discard()

    def _alive(self, driver: webdriver.Chrome) -> bool:
        try:
            driver.execute_script("return 1")
        except _DRIVER_FAILURES:
            return False
        return True

    def _discard(self) -> None:
        driver, self._driver = self._driver, None
        if driver is not None:
            with contextlib.suppress(*_DRIVER_FAILURES):
                driver.quit()
        if self._profile is not None:
            shutil.rmtree(self._profile, ignore_errors=True)
            self._profile = None


def _first_line(exc: Exception) -> str:
    message = (getattr(exc, "msg", None) or str(exc) or type(exc).__name__).strip()
    return message.splitlines()[0]


def _origin(url: str) -> Origin:
    parsed = httpx.URL(url)
    default = 443 if parsed.scheme == "https" else 80
    return parsed.raw_host.decode("ascii"), parsed.port or default


async def _answer(writer: asyncio.StreamWriter, status: int, message: str) -> None:
    body = f"Mailgate refused this request: {message}\n".encode()
    writer.write(
        b"HTTP/1.1 %d Refused\r\nContent-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (status, len(body), body)
    )
    await writer.drain()


async def _relay(*directions: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
    """Copy each reader into its writer until the first direction ends."""
    copies = [asyncio.ensure_future(_copy(reader, writer)) for reader, writer in directions]
    try:
        await asyncio.wait(copies, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for copy in copies:
            copy.cancel()


async def _copy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
