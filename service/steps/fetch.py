"""Download a page and keep only the text a reader would see.

The download runs outside ``ctx.run`` (it is not checkpointed), and the SDK's retry policy
never sees the exception, so the fetcher classifies failures itself: a host that does not
resolve, a refused URL or an unusable page raise a ``Permanent`` error at once; connection
errors, timeouts, a resolver that cannot answer, 408, 429 and 5xx are ``Transient``, retried
under ``service.retry.FETCH`` (bounded, jittered backoff), and end in ``FetchFailed`` carrying
the last cause.

Every hop, redirects included, goes through the SSRF guard (``guard.check_url``) and connects
to the address the guard checked. Redirects are therefore followed here, not by httpx.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Protocol

import httpx
from bs4 import BeautifulSoup, UnicodeDammit

from service import retry
from service.errors import FetchFailed, Transient, UnusablePage
from service.retry import Retry, Sleep
from service.steps.guard import (
    Destination,
    Resolver,
    check_url,
    pinned_request,
    system_resolve,
)

logger = logging.getLogger(__name__)

MAX_REDIRECTS = 5
HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
TEXT_TYPES = frozenset({"text/plain"})
ACCEPT = "text/html,application/xhtml+xml;q=0.9,text/plain;q=0.8"
BOILERPLATE = (
    "script",
    "style",
    "nav",
    "header",
    "footer",
    "aside",
    "noscript",
    "template",
    "svg",
    "iframe",
)
PAGE_LANDMARKS = ("header", "footer")
"""Dropped only outside ``article``/``main``: there they hold a headline or byline instead."""
BLOCKS = (
    "address",
    "article",
    "blockquote",
    "br",
    "dd",
    "div",
    "dl",
    "dt",
    "figcaption",
    "figure",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "hr",
    "li",
    "main",
    "ol",
    "p",
    "pre",
    "section",
    "table",
    "td",
    "th",
    "title",
    "tr",
    "ul",
)
_LINE_END = "\u2029"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


class Fetcher(Protocol):
    name: str

    async def fetch(self, url: str) -> str:
        """The page's visible text; raises ``errors.Permanent`` subclasses only."""
        ...

    async def close(self) -> None: ...


def extract_text(html: str) -> str:
    """Visible text, one block per line, without scripts and navigation boilerplate.

    Whitespace inside a block (source line breaks included) collapses to one space, as a
    browser renders it; block elements, ``<br>`` and the lines of a ``<pre>`` end a line."""
    soup = BeautifulSoup(html, "lxml")
    for tag in soup.find_all(BOILERPLATE):
        if tag.decomposed:
            continue
        if tag.name in PAGE_LANDMARKS and tag.find_parent(("article", "main")):
            continue
        tag.decompose()
    for pre in soup.find_all("pre"):
        for string in pre.find_all(string=True):
            string.replace_with(string.replace("\n", _LINE_END))
    for tag in soup.find_all(BLOCKS):
        # Inside the tag, not beside it: ``insert_before`` finds the tag's index among its
        # siblings each time, which turns a page of many paragraphs quadratic.
        tag.insert(0, _LINE_END)
        tag.append(_LINE_END)
    lines = (" ".join(line.split()) for line in soup.get_text().split(_LINE_END))
    return "\n".join(line for line in lines if line)


def _visible_text(body: bytes, media_type: str, charset: str | None) -> str:
    """Decoding and parsing a page of megabytes takes a while: callers run this off the loop."""
    is_html = media_type in HTML_TYPES
    markup = UnicodeDammit(body, [charset] if charset else [], is_html=is_html).unicode_markup
    return extract_text(markup or "") if is_html else normalize(markup or "")


def normalize(text: str) -> str:
    """Plain text: each line's whitespace collapsed, blank lines dropped."""
    lines = (" ".join(line.split()) for line in text.splitlines())
    return "\n".join(line for line in lines if line)


async def with_retries(
    attempt: Callable[[], Awaitable[str]],
    *,
    host: str,
    attempts: int,
    backoff_s: float,
    sleep: Sleep,
) -> str:
    """Run ``attempt`` until it succeeds, a ``Permanent`` error escapes, or attempts run out."""
    policy = replace(retry.FETCH, first_s=backoff_s, attempts=attempts)

    def waiting(failure: Retry) -> None:
        logger.warning(
            "fetching from %s failed (%s); attempt %d of %d in %.1fs",
            host,
            failure.error,
            failure.attempt + 1,
            attempts,
            failure.delay_s,
        )

    try:
        return await policy.run(attempt, sleep=sleep, on_retry=waiting)
    except Transient as exc:
        msg = f"could not fetch from {host} after {attempts} attempts: {exc}"
        raise FetchFailed(msg) from exc


class HttpFetcher:
    """httpx + Beautiful Soup: fast, no JavaScript."""

    name = "http"

    def __init__(
        self,
        *,
        allow_private: bool,
        max_bytes: int,
        timeout_s: float,
        attempts: int,
        user_agent: str,
        backoff_s: float = retry.FETCH.first_s,
        sleep: Sleep = asyncio.sleep,
        resolve: Resolver = system_resolve,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._allow_private = allow_private
        self._max_bytes = max_bytes
        self._timeout_s = timeout_s
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._sleep = sleep
        self._resolve = resolve
        # No keep-alive: the pool is keyed by the pinned IP, so a kept connection could carry
        # a request for another host name on the same address under the wrong TLS name.
        # trust_env=False: an ambient proxy would resolve names itself, past the guard.
        self._client = httpx.AsyncClient(
            headers={"User-Agent": user_agent, "Accept": ACCEPT},
            timeout=timeout_s,
            follow_redirects=False,
            trust_env=False,
            verify=ssl_context or True,
            limits=httpx.Limits(max_keepalive_connections=0),
        )

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
        await self._client.aclose()

    async def _fetch_once(self, url: str) -> str:
        target: str | httpx.URL = url
        try:
            async with asyncio.timeout(self._timeout_s):
                for _ in range(MAX_REDIRECTS + 1):
                    destination = await check_url(
                        target, allow_private=self._allow_private, resolve=self._resolve
                    )
                    response = await self._send(destination)
                    try:
                        location = _redirect_location(response, destination)
                        if location is None:
                            return await self._read(response, destination)
                    finally:
                        await response.aclose()
                    target = destination.url.join(location)
        except TimeoutError as exc:
            raise Transient(f"no complete answer within {self._timeout_s:g}s") from exc
        raise UnusablePage(f"more than {MAX_REDIRECTS} redirects, starting at {url}")

    async def _send(self, destination: Destination) -> httpx.Response:
        """Try each checked address in turn; only a failed connect moves on to the next."""
        last: httpx.TransportError | None = None
        for address in destination.addresses:
            request = pinned_request(self._client, "GET", destination, address)
            try:
                return await self._client.send(request, stream=True)
            except httpx.ConnectError as exc:
                _fail_on_bad_certificate(exc, destination)
                last = exc
            except httpx.TransportError as exc:
                last = exc
                break
        raise Transient(f"{destination.host}: {_describe(last)}") from last

    async def _read(self, response: httpx.Response, destination: Destination) -> str:
        _check_status(response, destination)
        media_type, charset = _content_type(response)
        if media_type not in HTML_TYPES | TEXT_TYPES:
            raise UnusablePage(f"{destination.host} sent {media_type}, not a web page")
        declared = int(response.headers.get("content-length") or 0)
        if declared > self._max_bytes:
            raise UnusablePage(self._too_large(destination))
        body = bytearray()
        try:
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > self._max_bytes:
                    raise UnusablePage(self._too_large(destination))
        except httpx.DecodingError as exc:
            raise UnusablePage(f"{destination.host} sent a body that cannot be decoded") from exc
        except httpx.TransportError as exc:
            raise Transient(f"{destination.host}: {_describe(exc)}") from exc
        text = await asyncio.to_thread(_visible_text, bytes(body), media_type, charset)
        if not text:
            raise UnusablePage(f"the page at {destination.url} has no visible text")
        return text

    def _too_large(self, destination: Destination) -> str:
        return f"the page at {destination.url} is larger than {self._max_bytes} bytes"


def _redirect_location(response: httpx.Response, destination: Destination) -> str | None:
    if response.status_code not in _REDIRECTS:
        return None
    location = response.headers.get("location")
    if not location:
        raise UnusablePage(f"{destination.host} redirected without saying where to")
    return location


def _check_status(response: httpx.Response, destination: Destination) -> None:
    status = response.status_code
    answer = f"{destination.host} answered {status} {response.reason_phrase}".rstrip()
    if status in (408, 429) or status >= 500:
        raise Transient(answer)
    if not 200 <= status < 300:
        raise UnusablePage(answer)


def _content_type(response: httpx.Response) -> tuple[str, str | None]:
    """Media type and charset; a missing header counts as HTML, as browsers sniff it so."""
    header = response.headers.get("content-type", "text/html")
    media_type, _, params = header.partition(";")
    charset = None
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip('"')
    return media_type.strip().lower(), charset


def _fail_on_bad_certificate(exc: BaseException, destination: Destination) -> None:
    """A certificate that does not verify will not verify on the next attempt either."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            raise FetchFailed(
                f"the TLS certificate of {destination.host} is not valid: {cause.verify_message}"
            ) from exc
        cause = cause.__cause__ or cause.__context__


def _describe(exc: BaseException | None) -> str:
    text = str(exc)
    return text or type(exc).__name__
