"""The default fetcher: guarded HTTP GET, content-type routing, extraction off the event loop."""

from __future__ import annotations

import asyncio

from rumination.config import Config
from rumination.web.base import Page
from rumination.web.extract import HTML_TYPES, TEXT_TYPES, decode_body, extract_html, sniff_type
from rumination.web.fetch import FetchError, FetchPolicy, guarded_get, make_client


def normalize_url(url: str) -> str:
    """Give a bare domain such as `example.org/x` an https:// scheme."""
    url = url.strip()
    if "://" not in url and not url.lower().startswith(("http:", "https:")) and ":" not in url.split("/")[0]:
        return "https://" + url
    return url


class WebFetcher:
    """Fetch web pages for the model."""

    name = "web"

    def __init__(self, config: Config):
        self.policy = FetchPolicy(
            allow_private=config.allow_private_network,
            timeout=config.fetch_timeout,
            max_bytes=config.fetch_max_bytes,
        )
        self.client = make_client(config.user_agent)

    async def fetch(self, url: str) -> Page:
        """Fetch `url` and return its main text; raise FetchError on any failure."""
        raw = await guarded_get(self.client, normalize_url(url), self.policy)
        kind = sniff_type(raw.content_type, raw.body)
        if kind == "application/pdf":
            raise FetchError("unsupported", "PDF documents cannot be read yet; try another source")
        if kind not in HTML_TYPES and kind not in TEXT_TYPES and not kind.startswith("text/"):
            raise FetchError("unsupported", f"binary content skipped ({kind})")
        text = decode_body(raw.body, raw.charset)
        if kind in HTML_TYPES:
            title, text = await asyncio.to_thread(extract_html, text, raw.final_url)
        else:
            title = ""
        if not text.strip():
            raise FetchError("empty", "the page has no readable text (it may need JavaScript)")
        return Page(
            url=raw.url,
            final_url=raw.final_url,
            title=title,
            text=text,
            content_type=kind,
            truncated=raw.truncated,
        )

    async def aclose(self) -> None:
        """Close the HTTP client."""
        await self.client.aclose()
