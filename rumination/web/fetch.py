"""The one guarded fetch function that every model-chosen URL goes through."""

from __future__ import annotations

import asyncio
import contextvars
import zlib
from dataclasses import dataclass, replace
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any
from urllib.parse import urljoin

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_exponential_jitter

from rumination.neterrors import brief, network_reason
from rumination.urls import domain_allowed
from rumination.web.base import FetchError
from rumination.web.guard import RefusedAddress, RefusedURL, Resolver, Unresolved, check_url, is_inside

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 10.0
_BACKOFF = wait_exponential_jitter(multiplier=0.5, max=4.0)
OUTSIDE_HINT = "only the question, a private search engine, an allowed domain or an intranet page may lead inside"


class AddressError(FetchError):
    """A host whose address may not be opened ("refused"), or that did not resolve ("network")."""


@dataclass(frozen=True)
class FetchPolicy:
    """Limits of one fetch."""

    allow_private: bool = False
    timeout: float = 30.0
    max_bytes: int = 5_000_000
    max_redirects: int = 5
    retries: int = 2
    resolver: Resolver | None = None  # None: the system resolver
    deny_domains: tuple[str, ...] = ()  # checked on every hop, redirects included
    allow_domains: tuple[str, ...] = ()  # when set, every hop must be (under) one of them
    private_hint: str | None = None  # why a private address is refused, when not for want of --allow-private-network


@dataclass(frozen=True)
class RawResponse:
    """A successful GET: the final URL, its status and headers, and the (possibly cut) body."""

    url: str
    final_url: str
    status: int
    content_type: str
    charset: str | None
    body: bytes
    truncated: bool
    inside: bool = False  # read from a private or local address


@dataclass
class Reach:
    """Whether one fetch may reach private addresses (its opener decides) and whether its page is on one."""

    private: bool = True  # still only where the fetcher's own policy allows private addresses at all
    inside: bool | None = None  # set by a fetcher that knows: the page was read from a private or local address


_REACH: contextvars.ContextVar[Reach | None] = contextvars.ContextVar("rumination_reach", default=None)


def current_reach() -> Reach:
    """The reach of the fetch running in this context; without an opener's, private addresses are the policy's."""
    return _REACH.get() or Reach()


def reach_policy(policy: FetchPolicy) -> FetchPolicy:
    """`policy` for the fetch running in this context: no private address where a public origin led to it."""
    if policy.allow_private and not current_reach().private:
        return replace(policy, allow_private=False, private_hint=OUTSIDE_HINT)
    return policy


def within_reach(reach: Reach) -> contextvars.Context:
    """A copy of the current context in which fetches have `reach`: run a fetch's task in it."""
    context = contextvars.copy_context()
    context.run(_REACH.set, reach)
    return context


class _RetryableStatus(Exception):
    def __init__(self, status: int, retry_after: float | None):
        super().__init__(f"HTTP {status}")
        self.status, self.retry_after = status, retry_after


def make_client(user_agent: str) -> httpx.AsyncClient:
    """An HTTP client with no ambient authority: no proxies from the environment, no .netrc, no cookies."""
    return httpx.AsyncClient(
        trust_env=False,
        cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),
        follow_redirects=False,
        timeout=httpx.Timeout(15.0, connect=10.0),
        headers={
            "User-Agent": user_agent,
            "Accept": "text/html,application/xhtml+xml,text/plain;q=0.9,*/*;q=0.5",
            "Accept-Encoding": "gzip, deflate",  # only encodings we can decompress with a size limit
        },
        limits=httpx.Limits(max_connections=16, max_keepalive_connections=8),
    )


async def guarded_get(client: httpx.AsyncClient, url: str, policy: FetchPolicy) -> RawResponse:
    """GET `url` under the egress guard and the current reach, following up to `max_redirects` re-checked redirects."""
    policy = reach_policy(policy)
    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.retries + 1),
        wait=_wait,
        retry=retry_if_exception_type((httpx.TransportError, _RetryableStatus)),  # incl. a reset mid-body
        reraise=True,
    )
    try:
        async with asyncio.timeout(policy.timeout):
            async for attempt in retrying:
                with attempt:
                    return await _follow(client, url, policy)
    except TimeoutError:
        raise FetchError("timeout", f"timed out after {policy.timeout:g} s") from None
    except RefusedAddress as exc:
        raise AddressError("refused", str(exc)) from None
    except RefusedURL as exc:
        raise FetchError("refused", str(exc)) from None
    except Unresolved as exc:
        raise AddressError("network", str(exc)) from None
    except _RetryableStatus as exc:
        raise FetchError("http", f"HTTP {exc.status} (after {policy.retries} retries)") from None
    except httpx.TimeoutException:
        raise FetchError("timeout", "the server stopped responding") from None
    except httpx.TransportError as exc:
        reason = network_reason(exc) or brief(f"{type(exc).__name__} {exc}")
        raise FetchError("network", f"network error: {reason}") from None
    except (httpx.DecodingError, zlib.error) as exc:
        raise FetchError("network", f"could not decode the response: {exc}") from None
    except (httpx.InvalidURL, UnicodeError) as exc:
        raise FetchError("refused", f"refused: invalid URL ({exc})") from None
    except (httpx.HTTPError, ValueError, OSError) as exc:  # anything else a hostile server provokes
        raise FetchError("network", f"{type(exc).__name__}: {exc}") from None


async def _follow(client: httpx.AsyncClient, url: str, policy: FetchPolicy) -> RawResponse:
    current, allow_private, hint = url, policy.allow_private, policy.private_hint
    for _ in range(policy.max_redirects + 1):
        if not domain_allowed(current, (), policy.deny_domains):
            raise RefusedURL(f"refused: {current} is on a denied domain")
        if not domain_allowed(current, policy.allow_domains, ()):
            raise RefusedURL(f"refused: {current} is outside the allowed domains")
        hinted = {"private_hint": hint} if hint else {}  # only when set: stand-ins for check_url take no hint
        address = await check_url(current, allow_private=allow_private, resolver=policy.resolver, **hinted)
        inside = is_inside(address)
        if not inside and allow_private:  # a public page's redirect never leads inside
            allow_private, hint = False, f"a public page redirected there ({OUTSIDE_HINT})"
        response = await _send(client, _pinned_request(client, current, address))
        try:
            if response.is_redirect and "location" in response.headers:
                try:
                    current = urljoin(current, response.headers["location"])
                except ValueError as exc:
                    raise FetchError("refused", f"refused: malformed redirect location ({exc})") from None
                continue
            if response.status_code >= 400:
                raise FetchError("http", f"HTTP {response.status_code} {response.reason_phrase}".strip())
            return await _read(response, url, current, policy, inside)
        finally:
            await response.aclose()
    raise FetchError("redirects", f"too many redirects (more than {policy.max_redirects})")


def _pinned_request(client: httpx.AsyncClient, url: str, address: str) -> httpx.Request:
    """A GET that connects to the checked `address`; the Host header and TLS SNI keep the URL's hostname."""
    target = httpx.URL(url)
    host = f"[{address}]" if ":" in address else address
    request = client.build_request("GET", target.copy_with(host=host.strip("[]")))
    request.headers["Host"] = target.netloc.decode("ascii")
    request.extensions["sni_hostname"] = target.raw_host.decode("ascii")
    if target.scheme == "https":
        # Never reuse a TLS connection verified for another name that shares this address (CDNs).
        request.headers["Connection"] = "close"
    return request


async def _send(client: httpx.AsyncClient, request: httpx.Request) -> httpx.Response:
    """Send one request; a status worth retrying raises _RetryableStatus for guarded_get's retry loop."""
    response = await client.send(request, stream=True)
    if response.status_code in RETRY_STATUSES:
        await response.aclose()
        raise _RetryableStatus(response.status_code, _retry_after(response))
    return response


def _wait(state: RetryCallState) -> float:
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, _RetryableStatus) and exc.retry_after is not None:
        return min(exc.retry_after, MAX_RETRY_AFTER)
    return _BACKOFF(state)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "").strip()
    return float(value) if value.isascii() and value.isdigit() else None


async def _read(response: httpx.Response, url: str, final_url: str, policy: FetchPolicy, inside: bool) -> RawResponse:
    """Read the raw body and decompress it ourselves, stopping both at the cap (no decompression bombs)."""
    declared = response.headers.get("content-length", "")
    if declared.isascii() and declared.isdigit() and int(declared) > policy.max_bytes:
        raise FetchError("too_large", f"page too large ({int(declared):,} bytes; the limit is {policy.max_bytes:,})")
    decoders = _decoders(response.headers.get("content-encoding", ""))
    body, raw_size, truncated = bytearray(), 0, False
    async for chunk in response.aiter_raw():
        raw_size += len(chunk)
        for decoder in decoders:
            chunk = decoder.decompress(chunk, policy.max_bytes + 1 - len(body))
        body += chunk
        if len(body) > policy.max_bytes or raw_size > policy.max_bytes:
            truncated = True
            break
    content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    return RawResponse(
        url,
        final_url,
        response.status_code,
        content_type,
        response.charset_encoding,
        bytes(body[: policy.max_bytes]),
        truncated,
        inside,
    )


class _Decoder:
    """Incremental gzip or deflate decoding with an output limit; handles raw deflate and gzip members."""

    def __init__(self, encoding: str):
        self.encoding = encoding
        self._zlib: Any = None

    def _new(self, head: bytes) -> Any:
        if self.encoding == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        zlib_header = len(head) >= 2 and head[0] & 0x0F == 8 and (head[0] * 256 + head[1]) % 31 == 0
        return zlib.decompressobj(zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS)  # many servers send raw

    def decompress(self, data: bytes, limit: int) -> bytes:
        out = b""
        while data and limit > len(out):
            if self._zlib is None:
                self._zlib = self._new(data)
            out += self._zlib.decompress(data, limit - len(out))
            data = self._zlib.unconsumed_tail
            if self._zlib.eof:  # a gzip body may hold several members
                data, self._zlib = self._zlib.unused_data, None
        return out


def _decoders(content_encoding: str) -> list[Any]:
    """A decoder for each listed encoding, outermost first; unknown encodings are refused."""
    decoders = []
    for encoding in reversed([e.strip().lower() for e in content_encoding.split(",") if e.strip()]):
        if encoding in ("gzip", "x-gzip", "deflate"):
            decoders.append(_Decoder("deflate" if encoding == "deflate" else "gzip"))
        elif encoding != "identity":
            raise FetchError("unsupported", f"unsupported content encoding {encoding!r}")
    return decoders
