"""The SSRF guard's judgement, as pure unit tests: addresses are classified, never contacted."""

from __future__ import annotations

import ipaddress

import httpx
import pytest

from service.errors import BlockedUrl, HostNotFound
from service.steps.guard import (
    Destination,
    allowed,
    check_url,
    host_refusal,
    pinned_request,
    refusal,
    system_resolve,
)

REFUSED = [
    ("169.254.169.254", "cloud metadata"),
    ("fd00:ec2::254", "cloud metadata"),
    ("10.0.0.1", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("100.64.0.1", "carrier-grade NAT"),
    ("fd00::1", "private"),
    ("fe80::1", "link-local"),
    ("169.254.10.1", "link-local"),
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("::1", "loopback"),
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:10.1.2.3", "private"),
    ("2002:a00:1::1", "private"),
    ("64:ff9b::7f00:1", "loopback"),
    ("224.0.0.1", "multicast"),
    ("ff02::1", "multicast"),
    ("0.0.0.0", "unspecified"),
    ("::", "unspecified"),
    ("240.0.0.1", "reserved"),
    ("198.18.0.1", "private"),
    ("2001:db8::1", "private"),
]
PUBLIC = ["93.184.216.34", "8.8.8.8", "2606:2800:220:1:248:1893:25c8:1946", "2a00:1450:4001::1"]


@pytest.mark.parametrize(("address", "reason"), REFUSED)
def test_refuses_addresses_inside_or_special(address: str, reason: str) -> None:
    assert reason in (refusal(ipaddress.ip_address(address)) or "")


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize("address", ["127.0.0.1", "10.0.0.1", "::1", "fd00::1", "192.168.1.1"])
def test_allow_private_lets_inside_addresses_pass(address: str) -> None:
    ip = ipaddress.ip_address(address)
    assert allowed(ip, allow_private=False) is not None
    assert allowed(ip, allow_private=True) is None


@pytest.mark.parametrize("address", ["169.254.169.254", "fd00:ec2::254"])
def test_metadata_stays_refused_even_with_allow_private(address: str) -> None:
    assert allowed(ipaddress.ip_address(address), allow_private=True) == "a cloud metadata address"


async def never_resolve(host: str, port: int) -> list[str]:
    raise AssertionError(f"resolved {host} although the URL should be refused first")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file:///etc/passwd", "only http and https URLs can be fetched, not file"),
        ("ftp://example.com/file.txt", "only http and https URLs can be fetched, not ftp"),
        ("gopher://example.com/", "only http and https URLs can be fetched, not gopher"),
        ("javascript:alert(1)", "only http and https URLs can be fetched, not javascript"),
        ("example.com/page", "the URL needs to start with http:// or https://"),
        ("http:///path-only", "the URL has no host"),
    ],
)
async def test_only_http_and_https_urls_with_a_host_are_fetched(url: str, message: str) -> None:
    with pytest.raises(BlockedUrl) as caught:
        await check_url(url, allow_private=True, resolve=never_resolve)
    assert str(caught.value) == message


async def test_one_private_answer_among_public_ones_refuses_the_host() -> None:
    async def mixed(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "10.0.0.7"]

    with pytest.raises(
        BlockedUrl, match=r"refusing to fetch news\.example \(10\.0\.0\.7\): a private"
    ):
        await check_url("https://news.example/today", allow_private=False, resolve=mixed)


async def test_resolves_once_and_keeps_every_checked_address() -> None:
    lookups: list[tuple[str, int]] = []

    async def public(host: str, port: int) -> list[str]:
        lookups.append((host, port))
        return ["93.184.216.34", "2606:2800:220:1:248:1893:25c8:1946", "93.184.216.34"]

    destination = await check_url(
        "https://Bücher.example/a?b=1", allow_private=False, resolve=public
    )

    assert lookups == [("xn--bcher-kva.example", 443)]
    assert destination.host == "xn--bcher-kva.example"
    assert destination.port == 443
    assert [str(a) for a in destination.addresses] == [
        "93.184.216.34",
        "2606:2800:220:1:248:1893:25c8:1946",
    ]


async def test_a_name_that_does_not_resolve_is_host_not_found() -> None:
    with pytest.raises(HostNotFound, match=r"cannot resolve host example\.invalid"):
        await check_url("http://example.invalid/", allow_private=True)


async def test_the_system_resolver_answers_addresses_as_text() -> None:
    assert "127.0.0.1" in await system_resolve("localhost", 80)


async def pinned(url: str, address: str) -> httpx.Request:
    parsed = httpx.URL(url)
    destination = Destination(
        url=parsed,
        host=parsed.raw_host.decode("ascii"),
        port=parsed.port or 443,
        addresses=(ipaddress.ip_address(address),),
    )
    async with httpx.AsyncClient() as client:
        return pinned_request(client, "GET", destination, destination.addresses[0])


async def test_pinned_request_connects_to_the_address_but_names_the_host() -> None:
    request = await pinned("https://news.example:8443/a?b=1", "93.184.216.34")

    assert str(request.url) == "https://93.184.216.34:8443/a?b=1"
    assert request.headers["host"] == "news.example:8443"
    assert request.extensions["sni_hostname"] == "news.example"


async def test_pinned_request_brackets_an_ipv6_address_and_omits_default_ports() -> None:
    request = await pinned("https://news.example/", "2606:2800:220:1:248:1893:25c8:1946")

    assert request.url.host == "2606:2800:220:1:248:1893:25c8:1946"
    assert str(request.url).startswith("https://[2606:2800:220:1:248:1893:25c8:1946]/")
    assert request.headers["host"] == "news.example"


def test_metadata_embedded_in_ipv6_stays_refused_with_allow_private() -> None:
    ip = ipaddress.ip_address("::ffff:169.254.169.254")
    assert allowed(ip, allow_private=True) == "a cloud metadata address"


@pytest.mark.parametrize(
    ("host", "allow_private", "says"),
    [
        ("127.0.0.1", False, ["127.0.0.1 is a loopback address", "MAILGATE_ALLOW_PRIVATE_URLS=1"]),
        ("localhost", False, ["loopback", "MAILGATE_ALLOW_PRIVATE_URLS=1"]),
        ("10.1.2.3", False, ["private", "MAILGATE_ALLOW_PRIVATE_URLS=1"]),
        ("169.254.169.254", True, ["cloud metadata", "never fetches"]),
        ("169.254.169.254", False, ["cloud metadata", "never fetches"]),
        ("::ffff:169.254.169.254", True, ["cloud metadata"]),
        ("Metadata.Google.Internal.", True, ["cloud metadata"]),
    ],
)
def test_hosts_refused_before_any_lookup_say_what_would_allow_them(
    host: str, allow_private: bool, says: list[str]
) -> None:
    refused = host_refusal(host, allow_private=allow_private)
    assert refused is not None
    assert all(part in refused for part in says), refused


@pytest.mark.parametrize(
    ("host", "allow_private"),
    [("example.com", False), ("93.184.215.14", False), ("127.0.0.1", True), ("10.1.2.3", True)],
)
def test_hosts_only_a_lookup_can_judge_pass(host: str, allow_private: bool) -> None:
    assert host_refusal(host, allow_private=allow_private) is None


async def test_a_name_resolving_inside_names_the_setting_that_allows_it() -> None:
    async def inside(host: str, port: int) -> list[str]:
        return ["10.0.0.7"]

    with pytest.raises(BlockedUrl, match="MAILGATE_ALLOW_PRIVATE_URLS=1"):
        await check_url("http://news.example/", allow_private=False, resolve=inside)
