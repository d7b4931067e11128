"""What the HTTP search engines share: their API key check and their (trusted, configured) client."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import httpx
from pydantic import SecretStr

from rumination.errors import ConfigError
from rumination.neterrors import brief, network_reason
from rumination.search.base import SearchError, SearchHit
from rumination.search.errors import unreachable
from rumination.urls import without_userinfo


def require_key(secret: SecretStr | None, engine: str) -> str:
    """The engine's API key, or a ConfigError that says where to put it."""
    key = secret.get_secret_value().strip() if secret else ""
    if not key:
        raise ConfigError(
            f"--search {engine} needs an API key: set RUMINATION_{engine.upper()}_API_KEY or "
            f"{engine}_api_key in the config file"
        )
    return key


def api_client(url: str, setting: str, user_agent: str, timeout: float, **headers: str) -> httpx.AsyncClient:
    """A client for a configured endpoint: no proxies from the environment, JSON accepted."""
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"{setting} must be an http(s) URL, got {without_userinfo(url)!r}")
    return httpx.AsyncClient(
        trust_env=False,
        timeout=httpx.Timeout(timeout, connect=5.0),
        headers={"User-Agent": user_agent, "Accept": "application/json", **headers},
    )


async def send(request: Awaitable[httpx.Response], service: str, where: str) -> httpx.Response:
    """Await an API call, turning a connection failure into an Unreachable error that names the endpoint.

    The endpoint is named without its credentials: the message becomes the model's observation.
    """
    where = without_userinfo(where)
    try:
        return await request
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        raise unreachable(service, where, exc) from None
    except httpx.TimeoutException:
        raise SearchError(f"{service} at {where} did not answer in time") from None
    except httpx.TransportError as exc:
        reason = network_reason(exc) or brief(str(exc)) or "the connection broke off"
        raise SearchError(f"{service} at {where} failed: {reason}") from None


def decode_json(response: httpx.Response, service: str) -> Any:
    """The response's JSON, or a SearchError saying it was not JSON."""
    try:
        return response.json()
    except ValueError:
        raise SearchError(f"{service} did not answer with JSON") from None


def result_hits(response: httpx.Response, service: str, max_results: int) -> list[SearchHit]:
    """Hits from a `{"results": [{"title", "url", "content"}]}` answer (SearXNG and Tavily share it)."""
    data = decode_json(response, service)
    rows = data.get("results") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise SearchError(f"{service} answered JSON without a list of results")
    hits = [
        SearchHit(title=str(r.get("title") or ""), url=str(r["url"]), snippet=str(r.get("content") or ""))
        for r in rows
        if isinstance(r, dict) and r.get("url")
    ]
    return hits[:max_results]
