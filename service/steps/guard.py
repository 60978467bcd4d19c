"""The SSRF guard: decide where a fetch may connect, and make sure it connects exactly there.

A URL is judged by the addresses its host resolves to, not by its spelling: ``localhost``,
``0x7f.1`` or a public name whose DNS answer is ``10.0.0.5`` all lead inside. So the guard
resolves a host once, refuses the request if *any* answer is an address Mailgate must not
reach, and hands back the checked addresses. Callers then connect to one of those addresses
and never look the name up again, which is what defeats DNS rebinding (a name answering a
public address to the check and ``127.0.0.1`` to the connect).

``pinned_request`` does this for httpx: it builds the request from the real URL (so httpx
derives the ``Host`` header itself), then swaps the URL's host for the checked IP and sets
httpcore's ``sni_hostname`` extension, so TLS still sends SNI for, and verifies the
certificate against, the real host name. Both are public httpx/httpcore API; a custom network
backend would do the same through httpx internals.

Cloud metadata endpoints are refused even when private addresses are allowed: no page worth
summarizing lives there, and a leaked instance credential is the classic SSRF prize.
``host_refusal`` judges a host as written, before any lookup, so a submission that can never
be fetched is refused at once, with the setting that would allow it when there is one.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import httpx

from service.errors import BlockedUrl, HostNotFound, Transient

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]
"""Answers the IP addresses (as text) a host name resolves to; raises ``HostNotFound``."""

SCHEMES = ("http", "https")
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
#: Names the clouds give their metadata service; they resolve to a metadata address inside.
METADATA_HOSTS = frozenset(
    {"metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal"}
)
LOOPBACK_HOSTS = frozenset({"localhost", "localhost.localdomain"})
METADATA = "a cloud metadata address"
ALLOW_PRIVATE_HINT = "set MAILGATE_ALLOW_PRIVATE_URLS=1 to allow private and loopback addresses"
NEVER_HINT = "Mailgate never fetches those, even with MAILGATE_ALLOW_PRIVATE_URLS"
_SHARED_ADDRESS_SPACE = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_UNRESOLVABLE = frozenset({socket.EAI_NONAME, socket.EAI_NODATA, socket.EAI_FAIL})


class LookupUnavailable(Transient):
    """The resolver could not answer this time (not "no such host"): worth another attempt."""


@dataclass(frozen=True)
class Destination:
    """A URL whose host has been resolved and checked; connect only to ``addresses``."""

    url: httpx.URL
    host: str
    port: int
    addresses: tuple[IPAddress, ...]


def refusal(ip: IPAddress) -> str | None:
    """Why Mailgate must not connect to ``ip`` (private networks refused), or None if public."""
    if ip in METADATA_ADDRESSES:
        return METADATA
    for inner in _embedded_ipv4(ip):
        reason = refusal(inner)
        if reason is not None:
            return f"{reason} (embedded in {ip})"
    checks = (
        (ip.is_unspecified, "an unspecified address"),
        (ip.is_loopback, "a loopback address"),
        (ip.is_link_local, "a link-local address"),
        (ip.is_multicast, "a multicast address"),
        (ip in _SHARED_ADDRESS_SPACE, "a carrier-grade NAT address"),
        (ip.is_reserved, "a reserved address"),
        (ip.is_private, "a private address"),
        (not ip.is_global, "not a public address"),
    )
    return next((reason for hit, reason in checks if hit), None)


def allowed(ip: IPAddress, *, allow_private: bool) -> str | None:
    """The refusal that applies under the chosen policy, or None."""
    if _is_metadata(ip):
        return METADATA
    return None if allow_private else refusal(ip)


def host_refusal(host: str, *, allow_private: bool) -> str | None:
    """Why a URL naming ``host`` is refused before any lookup, with what to do about it; None
    when only a lookup can tell (the fetch checks every address the name resolves to)."""
    name = host.strip("[]").lower().rstrip(".")
    if name in METADATA_HOSTS:
        reason: str | None = METADATA
    elif name in LOOPBACK_HOSTS or name.endswith(".localhost"):
        reason = "a loopback address"
    else:
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            return None
        reason = allowed(ip, allow_private=False)
    if reason is None:
        return None
    if reason == METADATA:
        return f"{host} is {METADATA}; {NEVER_HINT}"
    return None if allow_private else f"{host} is {reason}; {ALLOW_PRIVATE_HINT}"


async def system_resolve(host: str, port: int) -> list[str]:
    """One lookup through the OS resolver, off the event loop (asyncio runs it in a thread)."""
    try:
        answers = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        if exc.errno in _UNRESOLVABLE:
            raise HostNotFound(host) from exc
        raise LookupUnavailable(f"looking up {host} failed for now: {exc.strerror}") from exc
    except UnicodeError as exc:
        raise BlockedUrl(f"{host} is not a valid host name") from exc
    return [str(sockaddr[0]) for *_, sockaddr in answers]


async def check_url(
    url: str | httpx.URL, *, allow_private: bool, resolve: Resolver = system_resolve
) -> Destination:
    """Refuse anything but http(s) to public addresses; resolve the host exactly once."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        raise BlockedUrl(f"not a valid URL: {exc}") from exc
    if not parsed.scheme:
        raise BlockedUrl("the URL needs to start with http:// or https://")
    if parsed.scheme not in SCHEMES:
        raise BlockedUrl(f"only http and https URLs can be fetched, not {parsed.scheme}")
    if not parsed.host:
        raise BlockedUrl("the URL has no host")
    host = parsed.raw_host.decode("ascii")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    answers = await resolve(host, port)
    addresses = tuple(dict.fromkeys(ipaddress.ip_address(a.split("%")[0]) for a in answers))
    if not addresses:
        raise HostNotFound(host)
    for ip in addresses:
        reason = allowed(ip, allow_private=allow_private)
        if reason is not None:
            shown = host if host == str(ip) else f"{host} ({ip})"
            hint = "" if reason == METADATA else f" ({ALLOW_PRIVATE_HINT})"
            raise BlockedUrl(f"refusing to fetch {shown}: {reason}{hint}")
    return Destination(url=parsed, host=host, port=port, addresses=addresses)


def pinned_request(
    client: httpx.AsyncClient,
    method: str,
    destination: Destination,
    address: IPAddress,
    *,
    headers: Mapping[str, str] | None = None,
    content: bytes | None = None,
) -> httpx.Request:
    """A request for ``destination.url`` that connects to ``address`` and nowhere else."""
    request = client.build_request(method, destination.url, headers=headers, content=content)
    request.url = request.url.copy_with(host=str(address))
    request.extensions["sni_hostname"] = destination.host
    return request


def _is_metadata(ip: IPAddress) -> bool:
    return ip in METADATA_ADDRESSES or any(i in METADATA_ADDRESSES for i in _embedded_ipv4(ip))


def _embedded_ipv4(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses that an IPv6 address routes to (mapped, 6to4, Teredo, NAT64)."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    found = [ip.ipv4_mapped, ip.sixtofour, *(ip.teredo or ())]
    if ip in _NAT64:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return [inner for inner in found if inner is not None]
