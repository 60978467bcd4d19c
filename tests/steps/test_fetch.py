"""The HTTP fetcher against real servers on loopback: extraction, the SSRF guard end to end,
retries, and the limits that turn a page into a clear error."""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest
import trustme
from smtp_sink import free_port
from support import Sleeps, TableResolver, jittered

from service.errors import BlockedUrl, FetchFailed, HostNotFound, UnusablePage
from service.steps.fetch import HttpFetcher, extract_text
from service.steps.guard import LookupUnavailable

ARTICLE_TEXT = (
    "Tide pools\nTide pools\n"
    "Tide pools are rocky hollows that keep sea water when the tide goes out.\n"
    "They shelter anemones, sea stars and small fish, which must survive heat and salt.\n"
    "Visitors should step only on bare rock and never lift animals out of the water."
)
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture
def make_fetcher(make_fetcher_of: Callable[..., Any]) -> Callable[..., HttpFetcher]:
    return functools.partial(
        make_fetcher_of,
        HttpFetcher,
        max_bytes=100_000,
        timeout_s=5.0,
        backoff_s=0.5,
        user_agent="Mailgate-test",
    )


@pytest.fixture
async def raw_server() -> AsyncIterator[Callable[[Handler], Awaitable[int]]]:
    """Raw TCP servers on 127.0.0.1 for answers a stdlib HTTP server cannot give."""
    servers: list[asyncio.Server] = []

    async def start(handler: Handler) -> int:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        servers.append(server)
        return server.sockets[0].getsockname()[1]

    yield start
    for server in servers:
        server.close()


def recording_page(heads: list[bytes]) -> Handler:
    """Answers one small page and keeps the request head it was asked with."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await reader.readuntil(b"\r\n\r\n"))
        body = b"<p>hello</p>"
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )
        await writer.drain()
        writer.close()

    return answer


class _Quiet(BaseHTTPRequestHandler):
    body = b"<p>Served over IPv6 loopback.</p>"
    hosts: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        type(self).hosts.append(self.headers["Host"])
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args: Any) -> None:
        pass


class _V6Server(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True


@pytest.fixture
def ipv6_server() -> Iterator[tuple[int, type[_Quiet]]]:
    handler = type("V6Handler", (_Quiet,), {"hosts": []})
    server = _V6Server(("::1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], handler
    server.shutdown()
    server.server_close()


# -- extraction ---------------------------------------------------------------------------


def test_extract_text_keeps_the_article_and_drops_boilerplate() -> None:
    html = """<html><head><title>Tide pools</title><style>p{color:red}</style>
    <script>var tracking = 1;</script></head><body>
    <header>Site logo | Sign in</header><nav>Home | About</nav>
    <aside>Related: crabs</aside><noscript>Enable JavaScript</noscript>
    <template><p>hidden template</p></template>
    <main><article><header><h1>Tide pools</h1><p>By Ann</p></header>
    <p>Tide pools keep   sea water
       when the tide goes out.</p><p>Visit <a href="/x">the beach</a> at dawn.</p>
    <ul><li>Anemones</li><li>Sea stars</li></ul></article></main>
    <footer>Copyright 2026</footer></body></html>"""

    assert extract_text(html) == (
        "Tide pools\nTide pools\nBy Ann\n"
        "Tide pools keep sea water when the tide goes out.\n"
        "Visit the beach at dawn.\n"
        "Anemones\nSea stars"
    )


def test_extract_text_of_a_page_without_visible_text_is_empty() -> None:
    html = "<html><head><script>document.write('x')</script></head><body> <nav>Home</nav> </body>"
    assert extract_text(html) == ""


def test_extract_text_keeps_table_cells_and_line_breaks_apart() -> None:
    html = "<table><tr><th>Tide</th><td>Low</td></tr></table><p>one<br>two</p>"
    assert extract_text(html) == "Tide\nLow\none\ntwo"


# -- the SSRF guard, end to end, loopback only ---------------------------------------------


async def test_refuses_file_urls(make_fetcher: Callable[..., HttpFetcher]) -> None:
    with pytest.raises(BlockedUrl, match="only http and https URLs can be fetched, not file"):
        await make_fetcher(allow_private=False).fetch("file:///etc/passwd")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_refuses_loopback_without_the_flag(
    make_fetcher: Callable[..., HttpFetcher], sleeps: Sleeps, page_server: Any, host: str
) -> None:
    url = page_server.add("/secret", "<p>internal admin page</p>").replace("127.0.0.1", host)
    fetcher = make_fetcher(allow_private=False)

    with pytest.raises(BlockedUrl, match=f"refusing to fetch {host}.*loopback"):
        await fetcher.fetch(url)

    assert page_server.hits.get("/secret") is None
    assert sleeps == []


async def test_refuses_ipv6_loopback_without_the_flag(
    make_fetcher: Callable[..., HttpFetcher], ipv6_server: tuple[int, type[_Quiet]]
) -> None:
    port, handler = ipv6_server

    with pytest.raises(BlockedUrl, match="refusing to fetch ::1: a loopback address"):
        await make_fetcher(allow_private=False).fetch(f"http://[::1]:{port}/")

    assert handler.hosts == []


async def test_ipv6_loopback_is_fetched_with_the_flag(
    make_fetcher: Callable[..., HttpFetcher], ipv6_server: tuple[int, type[_Quiet]]
) -> None:
    port, handler = ipv6_server

    assert await make_fetcher().fetch(f"http://[::1]:{port}/") == "Served over IPv6 loopback."
    assert handler.hosts == [f"[::1]:{port}"]


async def test_refuses_a_loopback_page_that_redirects_to_another(
    make_fetcher: Callable[..., HttpFetcher], page_server: Any
) -> None:
    start = page_server.redirect("/go", page_server.base + "/article")

    with pytest.raises(BlockedUrl, match="loopback"):
        await make_fetcher(allow_private=False).fetch(start)

    assert page_server.hits == {}


async def test_follows_redirects_checking_every_hop(
    make_fetcher: Callable[..., HttpFetcher], page_server: Any
) -> None:
    port = page_server.server.server_address[1]
    resolver = TableResolver({"hop.test": "127.0.0.1"})
    page_server.redirect("/one", f"http://hop.test:{port}/two")
    page_server.redirect("/two", "/article")

    text = await make_fetcher(resolve=resolver).fetch(page_server.base + "/one")

    assert text == ARTICLE_TEXT
    assert resolver.lookups == ["127.0.0.1", "hop.test", "hop.test"]
    assert page_server.hits == {"/one": 1, "/two": 1, "/article": 1}


async def test_a_redirect_to_a_forbidden_scheme_is_refused(
    make_fetcher: Callable[..., HttpFetcher], page_server: Any
) -> None:
    start = page_server.redirect("/go", "file:///etc/passwd")

    with pytest.raises(BlockedUrl, match="not file"):
        await make_fetcher().fetch(start)


async def test_a_redirect_to_a_host_that_does_not_resolve_fails_at_once(
    make_fetcher: Callable[..., HttpFetcher], sleeps: Sleeps, page_server: Any
) -> None:
    start = page_server.redirect("/go", "http://example.invalid/page")
    fetcher = make_fetcher()

    with pytest.raises(HostNotFound, match=r"cannot resolve host example\.invalid"):
        await fetcher.fetch(start)

    assert page_server.hits == {"/go": 1}
    assert sleeps == []


async def test_too_many_redirects_are_unusable(
    make_fetcher: Callable[..., HttpFetcher], page_server: Any
) -> None:
    for hop in range(7):
        page_server.redirect(f"/r{hop}", f"/r{hop + 1}")

    with pytest.raises(UnusablePage, match="more than 5 redirects"):
        await make_fetcher().fetch(page_server.base + "/r0")

    assert sum(page_server.hits.values()) == 6


async def test_connects_to_the_checked_address_without_a_second_lookup(
    make_fetcher: Callable[..., HttpFetcher], raw_server: Callable[[Handler], Awaitable[int]]
) -> None:
    """``rebind.test`` exists only in this resolver: any second lookup would fail."""
    heads: list[bytes] = []
    port = await raw_server(recording_page(heads))
    resolver = TableResolver({"rebind.test": "127.0.0.1"})

    assert await make_fetcher(resolve=resolver).fetch(f"http://rebind.test:{port}/") == "hello"

    assert resolver.lookups == ["rebind.test"]
    assert f"\r\nhost: rebind.test:{port}\r\n".encode() in heads[0].lower()


# -- TLS to a pinned address ---------------------------------------------------------------


@pytest.fixture
def tls_site() -> Iterator[tuple[int, trustme.CA, list[str | None]]]:
    """An HTTPS page on 127.0.0.1 whose certificate names only ``pinned.test``."""
    ca = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("pinned.test").configure_cert(context)
    server_names: list[str | None] = []
    context.sni_callback = lambda _sock, name, _ctx: server_names.append(name)

    class Server(ThreadingHTTPServer):
        daemon_threads = True

        def get_request(self) -> tuple[socket.socket, Any]:
            sock, address = super().get_request()
            return context.wrap_socket(sock, server_side=True), address

    handler = type("TlsHandler", (_Quiet,), {"body": b"<p>Pinned over TLS.</p>", "hosts": []})
    server = Server(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1], ca, server_names
    server.shutdown()
    server.server_close()


def fetcher_trusting(
    make_fetcher: Callable[..., HttpFetcher], ca: trustme.CA, host: str
) -> HttpFetcher:
    """A fetcher that trusts the test CA and finds ``host`` on loopback, where the site is."""
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    return make_fetcher(resolve=TableResolver({host: "127.0.0.1"}), ssl_context=client_context)


async def test_tls_verifies_the_host_name_while_connecting_to_the_pinned_address(
    make_fetcher: Callable[..., HttpFetcher], tls_site: tuple[int, trustme.CA, list[str | None]]
) -> None:
    port, ca, server_names = tls_site
    fetcher = fetcher_trusting(make_fetcher, ca, "pinned.test")

    assert await fetcher.fetch(f"https://pinned.test:{port}/") == "Pinned over TLS."
    assert server_names == ["pinned.test"]


async def test_a_certificate_for_another_name_fails_without_retries(
    make_fetcher: Callable[..., HttpFetcher],
    sleeps: Sleeps,
    tls_site: tuple[int, trustme.CA, list[str | None]],
) -> None:
    port, ca, _ = tls_site
    fetcher = fetcher_trusting(make_fetcher, ca, "other.test")

    with pytest.raises(FetchFailed, match=r"TLS certificate of other\.test is not valid"):
        await fetcher.fetch(f"https://other.test:{port}/")

    assert sleeps == []


# -- failures: fail fast, retry, or give up clearly ----------------------------------------


async def test_dns_failure_fails_fast_after_one_attempt(
    make_fetcher: Callable[..., HttpFetcher],
    sleeps: Sleeps,
) -> None:
    resolver = TableResolver()
    fetcher = make_fetcher(resolve=resolver, attempts=5, backoff_s=10.0)
    started = time.monotonic()

    with pytest.raises(HostNotFound, match=r"cannot resolve host example\.invalid") as caught:
        await fetcher.fetch("http://example.invalid/page")

    assert time.monotonic() - started < 5
    assert resolver.lookups == ["example.invalid"]
    assert sleeps == []
    assert caught.value.host == "example.invalid"


async def test_retries_after_a_503_then_succeeds(
    make_fetcher: Callable[..., HttpFetcher], sleeps: Sleeps, page_server: Any
) -> None:
    url = page_server.add("/flaky", "<p>busy</p>", status=503)
    sleeps.on_sleep = lambda: page_server.add("/flaky", "<p>Ready now.</p>")

    assert await make_fetcher().fetch(url) == "Ready now."
    assert jittered(sleeps, [0.5], jitter_s=0.5)
    assert page_server.hits["/flaky"] == 2


@pytest.mark.parametrize("status", [429, 408, 500, 502, 503])
async def test_gives_up_after_the_attempt_budget_with_the_last_cause(
    make_fetcher: Callable[..., HttpFetcher], sleeps: Sleeps, page_server: Any, status: int
) -> None:
    url = page_server.add("/down", "<p>down</p>", status=status)
    fetcher = make_fetcher(attempts=4, backoff_s=0.25)

    with pytest.raises(FetchFailed, match=f"after 4 attempts: 127.0.0.1 answered {status}"):
        await fetcher.fetch(url)

    assert jittered(sleeps, [0.25, 0.5, 1.0], jitter_s=0.25)
    assert page_server.hits["/down"] == 4


async def test_connection_refused_is_retried_then_fails(
    make_fetcher: Callable[..., HttpFetcher],
    sleeps: Sleeps,
) -> None:
    port = free_port()
    fetcher = make_fetcher(attempts=2)

    with pytest.raises(FetchFailed, match=r"after 2 attempts: 127\.0\.0\.1: \S"):
        await fetcher.fetch(f"http://127.0.0.1:{port}/")

    assert jittered(sleeps, [0.5], jitter_s=0.5)


async def test_a_server_that_never_answers_times_out_and_is_retried(
    make_fetcher: Callable[..., HttpFetcher], raw_server: Callable[[Handler], Awaitable[int]]
) -> None:
    connections: list[int] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        await reader.read()

    port = await raw_server(silent)
    fetcher = make_fetcher(attempts=2, timeout_s=0.3)
    started = time.monotonic()

    with pytest.raises(FetchFailed, match="after 2 attempts"):
        await fetcher.fetch(f"http://127.0.0.1:{port}/")

    assert time.monotonic() - started < 3
    assert len(connections) == 2


UNUSABLE_PAGES = [
    *(
        pytest.param(
            {"body": "<p>no</p>", "status": status},
            f"127.0.0.1 answered {status}",
            id=f"answered-{status}",
        )
        for status in (401, 403, 404, 410)
    ),
    *(
        pytest.param(
            {"body": b"%PDF-1.7 binary", "content_type": content_type},
            f"127.0.0.1 sent {content_type}, not a web page",
            id=content_type,
        )
        for content_type in ("application/pdf", "image/png", "application/json")
    ),
    pytest.param({"body": "<p>" + "x" * 2_000 + "</p>"}, "larger than 1000 bytes", id="too-big"),
    pytest.param(
        {"body": "<html><body><script>app()</script><nav>Home</nav></body>"},
        "has no visible text",
        id="no-text",
    ),
]


@pytest.mark.parametrize(("page", "message"), UNUSABLE_PAGES)
async def test_an_unusable_page_fails_at_once_with_a_clear_error(
    make_fetcher: Callable[..., HttpFetcher],
    sleeps: Sleeps,
    page_server: Any,
    page: dict[str, Any],
    message: str,
) -> None:
    """Asking again cannot make these pages usable, so the first answer is final. The size cap
    is small; only the page meant to exceed it does."""
    url = page_server.add("/page", **page)

    with pytest.raises(UnusablePage, match=message):
        await make_fetcher(max_bytes=1_000).fetch(url)

    assert page_server.hits["/page"] == 1
    assert sleeps == []


async def test_an_endless_body_is_cut_off_at_the_size_cap(
    make_fetcher: Callable[..., HttpFetcher], raw_server: Callable[[Handler], Awaitable[int]]
) -> None:
    sent: list[int] = []

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n")
        chunk = b"<p>" + b"y" * 16_000 + b"</p>"
        try:
            while sum(sent) < 50_000_000:
                writer.write(chunk)
                await writer.drain()
                sent.append(len(chunk))
        except ConnectionError:
            pass

    port = await raw_server(endless)

    with pytest.raises(UnusablePage, match="larger than 100000 bytes"):
        await make_fetcher(max_bytes=100_000).fetch(f"http://127.0.0.1:{port}/")

    assert sum(sent) < 5_000_000


async def test_plain_text_is_accepted_as_text(
    make_fetcher: Callable[..., HttpFetcher], page_server: Any
) -> None:
    url = page_server.add(
        "/notes.txt",
        "Low tide at   6am.\n\n<b>Bring boots.</b>\n",
        content_type="text/plain; charset=utf-8",
    )

    assert await make_fetcher().fetch(url) == "Low tide at 6am.\n<b>Bring boots.</b>"


async def test_decodes_the_declared_charset(
    make_fetcher: Callable[..., HttpFetcher], page_server: Any
) -> None:
    url = page_server.add(
        "/latin",
        "<p>Crème brûlée à la plage</p>".encode("latin-1"),
        content_type="text/html; charset=iso-8859-1",
    )

    assert await make_fetcher().fetch(url) == "Crème brûlée à la plage"


async def test_sends_the_configured_user_agent(
    make_fetcher: Callable[..., HttpFetcher], raw_server: Callable[[Handler], Awaitable[int]]
) -> None:
    heads: list[bytes] = []
    port = await raw_server(recording_page(heads))

    assert await make_fetcher().fetch(f"http://127.0.0.1:{port}/") == "hello"
    assert b"\r\nuser-agent: mailgate-test\r\n" in heads[0].lower()


async def test_a_resolver_that_cannot_answer_now_is_retried(make_fetcher, page_server):
    answers = iter([socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")])

    async def flaky(host: str, port: int) -> list[str]:
        failure = next(answers, None)
        if failure is not None:
            raise LookupUnavailable(f"looking up {host} failed for now: {failure.strerror}")
        return ["127.0.0.1"]

    fetcher = make_fetcher(resolve=flaky)
    text = await fetcher.fetch(page_server.base + "/article")
    assert "Tide pools" in text


async def test_host_names_with_overlong_labels_are_refused(make_fetcher):
    fetcher = make_fetcher()
    with pytest.raises(BlockedUrl):
        await fetcher.fetch("http://" + "a" * 64 + ".example.com/")
