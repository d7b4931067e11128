"""The egress guard: which addresses count as public, which URLs are refused before and after DNS."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from rumination.web.guard import (
    MAX_URL_LENGTH,
    RefusedURL,
    Unresolved,
    check_url,
    check_url_syntax,
    is_public_address,
)

# A Teredo address is 2001:0:SERVER:FLAGS:PORT:CLIENT with the client's IPv4 address bit-inverted.
_TEREDO_SERVER = int(ipaddress.IPv4Address("65.54.227.120"))


def _teredo(client: str) -> str:
    inverted = ~int(ipaddress.IPv4Address(client)) & 0xFFFFFFFF
    value = (0x20010000 << 96) | (_TEREDO_SERVER << 64) | (0x8000 << 48) | (0x63BF << 32) | inverted
    return str(ipaddress.IPv6Address(value))


BLOCKED = [
    # loopback
    "127.0.0.1",
    "127.255.255.254",
    "::1",
    # "this network" 0.0.0.0/8 and the unspecified addresses
    "0.0.0.0",
    "0.1.2.3",
    "::",
    # RFC 1918
    "10.0.0.1",
    "10.255.255.255",
    "172.16.0.1",
    "172.31.255.254",
    "192.168.0.1",
    "192.168.255.255",
    # link-local, including the cloud metadata endpoint
    "169.254.169.254",
    "169.254.0.1",
    "fe80::1",
    "febf:ffff::1",
    # carrier-grade NAT 100.64/10
    "100.64.0.1",
    "100.127.255.254",
    # unique local fc00::/7 and deprecated site-local fec0::/10
    "fc00::1",
    "fd12:3456:789a::1",
    "fec0::1",
    "feff:ffff::1",
    # multicast, broadcast, reserved
    "224.0.0.1",
    "239.255.255.250",
    "ff02::1",
    "ff0e::1",
    "255.255.255.255",
    "240.0.0.1",
    "250.1.2.3",
    # documentation and benchmarking ranges
    "192.0.2.1",
    "198.51.100.7",
    "203.0.113.9",
    "198.18.0.1",
    "2001:db8::1",
    # IPv6 forms that embed a private IPv4 address
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:169.254.169.254",
    "64:ff9b::7f00:1",
    "64:ff9b::a00:1",
    "64:ff9b::a9fe:a9fe",
    "2002:7f00:1::",
    "2002:a00:1::1",
    "::7f00:1",
    "::a00:1",
    _teredo("10.0.0.1"),
    _teredo("127.0.0.1"),
    _teredo("192.168.1.1"),
]

ALLOWED = [
    "8.8.8.8",
    "1.1.1.1",
    "9.9.9.9",
    "2606:4700:4700::1111",
    "2001:4860:4860::8888",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
]


@pytest.mark.parametrize("address", BLOCKED)
def test_non_public_addresses_are_blocked(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is False


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses_are_allowed(address: str) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is True


def test_teredo_helper_embeds_the_client() -> None:
    """Guard the table itself: the Teredo rows really carry the intended client address."""
    teredo = ipaddress.IPv6Address(_teredo("10.0.0.1")).teredo
    assert teredo is not None
    assert teredo[1] == ipaddress.IPv4Address("10.0.0.1")


# --- URL syntax, before any DNS lookup -------------------------------------------------------------------------------

REFUSED_SYNTAX = [
    ("file:///etc/passwd", "only http and https"),
    ("FILE:///etc/passwd", "only http and https"),
    ("gopher://example.com:70/_GET", "only http and https"),
    ("ftp://example.com/file.txt", "only http and https"),
    ("data:text/html,<script>alert(1)</script>", "only http and https"),
    ("javascript:alert(1)", "only http and https"),
    ("/etc/passwd", "bare path"),
    ("example.com/page", "bare path"),
    ("//example.com/page", "bare path"),
    ("http://user@example.com/", "user name or password"),
    ("http://user:pw@example.com/", "user name or password"),
    ("https://:pw@example.com/", "user name or password"),
    ("http://example.com@127.0.0.1/", "user name or password"),
    ("http://example.com/a b", "control characters"),
    ("http://example.com/\tx", "control characters"),
    ("http://example.com/\nHost: evil", "control characters"),
    ("http://example.com/\r\nX-Injected: 1", "control characters"),
    ("http://example.com/\x00", "control characters"),
    ("http://example.com/\x1b[31m", "control characters"),
    ("http://example.com/\x7f", "control characters"),
    ("http:///path-only", "no host"),
    ("http://", "no host"),
    ("http://example.com:99999/", "malformed"),
    ("http://example.com:port/", "malformed"),
    ("http://[::1/", "malformed"),
    ("http://" + "".join(chr(0x4E00 + i) for i in range(1000)) + ".example/", "host name longer than 253"),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED_SYNTAX)
def test_check_url_syntax_refuses(url: str, reason: str) -> None:
    with pytest.raises(RefusedURL) as info:
        check_url_syntax(url)
    assert reason in str(info.value)


def test_overlong_url_is_refused_at_the_limit() -> None:
    prefix = "https://example.com/"
    at_limit = prefix + "a" * (MAX_URL_LENGTH - len(prefix))
    assert len(at_limit) == MAX_URL_LENGTH == 2083
    assert check_url_syntax(at_limit) == ("https", "example.com", 443)
    with pytest.raises(RefusedURL, match="longer than"):
        check_url_syntax(at_limit + "a")
    with pytest.raises(RefusedURL, match="longer than"):
        check_url_syntax(prefix + "a" * 10_000)


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("http://example.com", ("http", "example.com", 80)),
        ("https://example.com/", ("https", "example.com", 443)),
        ("HTTPS://Example.COM/Path?q=1#frag", ("https", "example.com", 443)),
        ("http://example.com:8080/a/b?c=d&e=f", ("http", "example.com", 8080)),
        ("https://en.wikipedia.org/wiki/Johannes_Gutenberg", ("https", "en.wikipedia.org", 443)),
        ("http://93.184.216.34/", ("http", "93.184.216.34", 80)),
        ("https://[2606:4700:4700::1111]:8443/dns", ("https", "2606:4700:4700::1111", 8443)),
        ("https://example.com/caf%C3%A9?q=%20x", ("https", "example.com", 443)),
        ("https://münchen.de/", ("https", "münchen.de", 443)),
    ],
)
def test_check_url_syntax_accepts_ordinary_urls(url: str, expected: tuple[str, str, int]) -> None:
    assert check_url_syntax(url) == expected


# --- resolution: odd spellings of loopback ---------------------------------------------------------------------------

LOOPBACK_SPELLINGS = [
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0177.0.0.1/",
    "http://127.1/",
    "http://localhost/",
    "http://LOCALHOST:8080/admin",
    "http://127.0.0.1/",
    "http://0.0.0.0/",
    "http://0/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://10.0.0.1/",
]
# No intranet site lives on a link-local address: cloud metadata does. Refused even with private addresses allowed.
NEVER_OPENED = [
    "http://169.254.169.254/latest/meta-data/",
    "http://[::ffff:169.254.169.254]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[fe80::1]/",
    "http://[fd00:ec2::254]/",
    "http://[fd20:ce::254]/",
    "http://100.100.100.200/",
    "http://168.63.129.16/",
    "http://[::ffff:0:a9fe:a9fe]/",
    "http://[64:ff9b:1::a9fe:a9fe]/",
    "http://2852039166/",
]


@pytest.mark.parametrize(
    "url",
    ["http://a.example/x\u202eRED", "http://a.example/\x9b31m", "http://a\u200b.example/", "http://a.example/\ufeff"],
)
def test_invisible_and_c1_characters_are_refused(url: str) -> None:
    with pytest.raises(RefusedURL, match="invisible or control characters"):
        check_url_syntax(url)


def test_a_host_that_idna_2003_and_2008_read_differently_is_refused() -> None:
    with pytest.raises(RefusedURL, match="IDNA 2003 and 2008"):
        check_url_syntax("https://graßhopper.org/")
    assert check_url_syntax("https://例え.jp/")[1] == "例え.jp"  # an ordinary internationalised name is fine


@pytest.mark.parametrize("url", LOOPBACK_SPELLINGS)
async def test_check_url_refuses_local_spellings(url: str) -> None:
    with pytest.raises(RefusedURL) as info:
        await check_url(url, allow_private=False)
    assert "private or local address" in str(info.value)
    assert "--allow-private-network" in str(info.value)


@pytest.mark.parametrize("allow_private", [False, True])
@pytest.mark.parametrize("url", NEVER_OPENED)
async def test_link_local_and_metadata_addresses_are_never_opened(url: str, allow_private: bool) -> None:
    with pytest.raises(RefusedURL, match="link-local or cloud metadata address"):
        await check_url(url, allow_private=allow_private)


@pytest.mark.parametrize("url", LOOPBACK_SPELLINGS)
async def test_check_url_allows_local_spellings_when_private_is_allowed(url: str) -> None:
    address = ipaddress.ip_address(await check_url(url, allow_private=True))
    assert not is_public_address(address)  # allowed, and the checked address is what will be connected to


@pytest.mark.parametrize("url", ["file:///etc/passwd", "http://user@localhost/", "gopher://127.0.0.1/"])
async def test_allow_private_does_not_relax_the_syntax_rules(url: str) -> None:
    with pytest.raises(RefusedURL):
        await check_url(url, allow_private=True)


async def test_an_unresolvable_host_is_a_network_failure_not_a_refusal() -> None:
    with pytest.raises(Unresolved) as info:
        await check_url("http://no-such-host.invalid/", allow_private=False)
    assert str(info.value) == "could not resolve host 'no-such-host.invalid' (no network, or no such host)"


# --- property tests --------------------------------------------------------------------------------------------------

BLOCKED_V4_NETWORKS = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.2.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
]
BLOCKED_V6_NETWORKS = ["::1/128", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8", "2001:db8::/32"]

_MAPPED = int(ipaddress.IPv6Address("::ffff:0:0"))
_NAT64 = int(ipaddress.IPv6Address("64:ff9b::"))

blocked_v4 = st.sampled_from(BLOCKED_V4_NETWORKS).flatmap(lambda net: st.ip_addresses(network=net))
blocked_v6 = st.sampled_from(BLOCKED_V6_NETWORKS).flatmap(lambda net: st.ip_addresses(network=net))


def _embeddings(ip: ipaddress.IPv4Address) -> list[ipaddress.IPv6Address]:
    """The IPv6 spellings that carry `ip`: mapped, NAT64, 6to4, IPv4-compatible and Teredo."""
    return [
        ipaddress.IPv6Address(_MAPPED | int(ip)),
        ipaddress.IPv6Address(_NAT64 | int(ip)),
        ipaddress.IPv6Address((0x2002 << 112) | (int(ip) << 80) | 1),
        ipaddress.IPv6Address(int(ip)),
        ipaddress.IPv6Address(_teredo(str(ip))),
    ]


@given(blocked_v4)
def test_blocked_ipv4_is_refused_in_every_spelling(ip: ipaddress.IPv4Address) -> None:
    assert is_public_address(ip) is False
    for form in _embeddings(ip):
        assert is_public_address(form) is False, form


@given(blocked_v6)
def test_blocked_ipv6_networks_are_refused(ip: ipaddress.IPv6Address) -> None:
    assert is_public_address(ip) is False


@given(st.ip_addresses(v=4))
def test_mapped_and_nat64_forms_agree_with_the_ipv4_verdict(ip: ipaddress.IPv4Address) -> None:
    verdict = is_public_address(ip)
    assert is_public_address(ipaddress.IPv6Address(_MAPPED | int(ip))) is verdict
    assert is_public_address(ipaddress.IPv6Address(_NAT64 | int(ip))) is verdict
