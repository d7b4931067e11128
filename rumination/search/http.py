"""What the HTTP search engines share: their API key check and their (trusted, configured) client."""

from __future__ import annotations

import httpx
from pydantic import SecretStr

from rumination.errors import ConfigError


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
        raise ConfigError(f"{setting} must be an http(s) URL, got {url!r}")
    return httpx.AsyncClient(
        trust_env=False,
        timeout=httpx.Timeout(timeout, connect=5.0),
        headers={"User-Agent": user_agent, "Accept": "application/json", **headers},
    )
