"""Resolve once, connect to the checked address: DNS rebinding cannot redirect a fetch."""

from __future__ import annotations

import pytest
from loopback import Exchange, Loopback

from rumination.web.base import FetchError
from rumination.web.fetch import FetchPolicy, guarded_get, make_client


def _echo(exchange: Exchange) -> None:
    """Answer with the Host header and request target it got."""
    body = f"<html><body><p>host={exchange.headers['Host']} path={exchange.path}</p></body></html>".encode()
    exchange.send(200, body, "text/html")


@pytest.fixture
def echo_on_127_0_0_2(loopback) -> Loopback:
    """An echo server on 127.0.0.2 only: reaching it proves the fetch connected to the address the resolver gave."""
    return loopback(fallback=_echo, host="127.0.0.2")


def hosts_seen(server: Loopback) -> list[str | None]:
    """The Host header of each request the server got."""
    return [request.headers.get("Host") for request in server.requests]


class _Rebinding:
    """A resolver that answers the checked address first and a different one afterwards."""

    def __init__(self, first: str, later: str):
        self.first, self.later, self.calls = first, later, 0

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls += 1
        return [self.first if self.calls == 1 else self.later]


async def test_connection_goes_to_the_checked_address_with_the_hostname_kept(echo_on_127_0_0_2):
    port = echo_on_127_0_0_2.server_address[1]
    resolver = _Rebinding("127.0.0.2", "127.0.0.1")
    async with make_client("test") as client:
        raw = await guarded_get(
            client, f"http://docs.rebind.test:{port}/page?q=1", FetchPolicy(allow_private=True, resolver=resolver)
        )
    assert resolver.calls == 1  # resolved once; the later (rebound) answer is never asked for
    assert hosts_seen(echo_on_127_0_0_2) == [f"docs.rebind.test:{port}"]
    assert f"host=docs.rebind.test:{port} path=/page?q=1" in raw.body.decode()
    assert raw.final_url == f"http://docs.rebind.test:{port}/page?q=1"


async def test_a_name_resolving_to_any_private_address_is_refused_before_connecting(echo_on_127_0_0_2):
    port = echo_on_127_0_0_2.server_address[1]

    async def mixed(host: str, port: int) -> list[str]:
        return ["8.8.8.8", "127.0.0.2"]  # one public, one private: refused as a whole

    async with make_client("test") as client:
        with pytest.raises(FetchError) as info:
            await guarded_get(client, f"http://mixed.test:{port}/", FetchPolicy(resolver=mixed))
    assert info.value.kind == "refused" and "127.0.0.2" in str(info.value)
    assert hosts_seen(echo_on_127_0_0_2) == []


async def test_unresolvable_host_is_a_clear_refusal():
    async def nothing(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    async with make_client("test") as client:
        with pytest.raises(FetchError) as info:
            await guarded_get(client, "http://nowhere.test/", FetchPolicy(resolver=nothing))
    assert info.value.kind == "network" and "could not resolve host 'nowhere.test'" in str(info.value)
