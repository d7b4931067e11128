"""The egress rule for model-chosen URLs: http(s) only, no userinfo, public addresses only."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit

from rumination.urls import MAX_HOST, has_userinfo

MAX_URL_LENGTH = 2083
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_V4_COMPAT = ipaddress.ip_network("::/96")
_SITE_LOCAL = ipaddress.ip_network("fec0::/10")
# Cloud metadata endpoints that are not link-local: AWS's and GCP's IPv6 ones (ULAs), Alibaba's (CGNAT range),
# Azure's WireServer (a public address).
_METADATA = {ipaddress.ip_address(a) for a in ("fd00:ec2::254", "fd20:ce::254", "100.100.100.200", "168.63.129.16")}
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
_V4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")
# Bidi controls, zero-width characters and BOM: in a URL they only serve to make it read as another.
_HIDDEN = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class RefusedURL(Exception):
    """A URL the guard will not fetch; the message says why."""


class RefusedAddress(RefusedURL):
    """A URL whose host resolves to an address the guard will not connect to."""


class Unresolved(Exception):
    """A host name that did not resolve: a network failure, not a refusal."""


def unwrap(ip: IPAddress) -> IPAddress:
    """The IPv4 address an IPv6 form embeds (mapped, 6to4, Teredo, NAT64, v4-compatible), else `ip` itself."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded: ipaddress.IPv4Address | None = ip.ipv4_mapped or ip.sixtofour
        if ip.teredo:
            embedded = ip.teredo[1]
        elif ip in _NAT64 or ip in _NAT64_LOCAL or ip in _V4_TRANSLATED or (ip in _V4_COMPAT and int(ip) > 1):
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is not None:
            return unwrap(embedded)
    return ip


def is_public_address(ip: IPAddress) -> bool:
    """True only for global unicast addresses, after unwrapping IPv6 forms that embed IPv4."""
    if ip in _NAT64_LOCAL:  # a local-use translation prefix, whatever it embeds
        return False
    ip = unwrap(ip)
    if ip in _SITE_LOCAL:
        return False
    return ip.is_global and not (ip.is_multicast or ip.is_reserved or ip.is_link_local or ip.is_loopback)


def is_inside(address: str) -> bool:
    """Whether `address` (an IP address as text) is a private or local one: on the user's side of the network."""
    return not is_public_address(ipaddress.ip_address(address.split("%", 1)[0]))


def is_never_opened(ip: IPAddress) -> bool:
    """Link-local addresses (cloud metadata lives at 169.254.169.254) and known metadata endpoints: no intranet
    site lives there, so even --allow-private-network does not open them."""
    ip = unwrap(ip)
    return ip.is_link_local or ip in _METADATA


def check_url_syntax(url: str) -> tuple[str, str, int]:
    """Refuse before any DNS lookup: scheme, userinfo, control characters, length. Return (scheme, host, port)."""
    if len(url) > MAX_URL_LENGTH:
        raise RefusedURL(f"refused: URL longer than {MAX_URL_LENGTH} characters")
    if any(ord(c) < 0x21 or 0x7F <= ord(c) <= 0x9F for c in url) or _HIDDEN.search(url):
        raise RefusedURL("refused: URL contains spaces, invisible or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise RefusedURL(f"refused: malformed URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise RefusedURL(f"refused: only http and https URLs can be opened, not {scheme or 'a bare path'}")
    if has_userinfo(url):
        raise RefusedURL("refused: URLs with a user name or password are not opened")
    if not parts.hostname:
        raise RefusedURL("refused: URL has no host")
    if len(parts.hostname) > MAX_HOST:  # no DNS name is longer; IDNA's work on it would grow with the square
        raise RefusedURL(f"refused: host name longer than {MAX_HOST} characters")
    if not parts.hostname.isascii() and _idna_2003(parts.hostname) != _idna_2008(parts.hostname):
        # The lists and DNS would read one name and the Host header and TLS another (ß: ss or xn--...).
        raise RefusedURL(f"refused: the host name {parts.hostname!r} reads differently under IDNA 2003 and 2008")
    return scheme, parts.hostname, port or (443 if scheme == "https" else 80)


def _idna_2003(host: str) -> str | None:
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError:
        return None


def _idna_2008(host: str) -> str | None:
    import httpx

    try:
        return httpx.URL(f"http://{host}/").raw_host.decode("ascii")
    except (httpx.InvalidURL, UnicodeError, ValueError):
        return None


Resolver = Callable[[str, int], Awaitable[list[str]]]


async def system_resolver(host: str, port: int) -> list[str]:
    """Every address `host` resolves to, through the operating system's resolver."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(sockaddr[0]).split("%", 1)[0] for *_, sockaddr in infos]


PRIVATE_HINT = "pass --allow-private-network to allow intranet and local sites"


async def check_url(
    url: str, *, allow_private: bool, resolver: Resolver | None = None, private_hint: str = PRIVATE_HINT
) -> str:
    """Resolve the host once and return the address to connect to; refuse unless every address is public.

    Connecting to the returned address (not the name again) is what defeats DNS rebinding. `private_hint` says
    in the refusal of a private address why it is refused.
    """
    _, host, port = check_url_syntax(url)
    try:
        addresses = [ipaddress.ip_address(a) for a in await (resolver or system_resolver)(host, port)]
    except socket.gaierror:
        raise Unresolved(f"could not resolve host {host!r} (no network, or no such host)") from None
    except (OSError, UnicodeError, ValueError) as exc:
        raise Unresolved(f"could not resolve host {host!r} ({exc})") from None
    if not addresses:
        raise Unresolved(f"could not resolve host {host!r}")
    for ip in addresses:
        if is_never_opened(ip):
            raise RefusedAddress(f"refused: {host} resolves to a link-local or cloud metadata address ({ip})")
        if not allow_private and not is_public_address(ip):
            raise RefusedAddress(f"refused: {host} resolves to a private or local address ({ip}); {private_hint}")
    return str(addresses[0])


def names_inside(url: str) -> bool:
    """Whether `url`'s host is written as a private or local address (or is localhost), without any DNS lookup."""
    try:
        host = (urlsplit(url.strip()).hostname or "").rstrip(".")
    except ValueError:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return is_inside(host)
    except ValueError:
        return False


async def resolves_inside(url: str, resolver: Resolver | None = None) -> bool:
    """Whether every address `url`'s host resolves to is private or local (False when it does not resolve)."""
    try:
        _, host, port = check_url_syntax(url)
        addresses = await (resolver or system_resolver)(host, port)
        return bool(addresses) and all(is_inside(address) for address in addresses)
    except (RefusedURL, OSError, UnicodeError, ValueError):
        return False
