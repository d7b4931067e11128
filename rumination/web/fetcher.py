"""The default fetcher: guarded HTTP GET, robots.txt, page cache, content routing, extraction in limited workers."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from urllib.parse import urlsplit

from rumination.config import Config
from rumination.urls import normalize_url
from rumination.web.base import FetchError, Page
from rumination.web.cache import PageCache
from rumination.web.extract import (
    HTML_TYPES,
    MARKDOWN_TYPES,
    TEXT_TYPES,
    decode_body,
    extract_page,
    markdown_title,
    sniff_type,
)
from rumination.web.fetch import FetchPolicy, RawResponse, current_reach, guarded_get, make_client, reach_policy
from rumination.web.robots import Robots

PER_HOST = 2  # concurrent requests to one host


class WebFetcher:
    """Fetch web pages for the model."""

    name = "web"

    def __init__(self, config: Config):
        self.config = config
        self.policy = FetchPolicy(
            allow_private=config.allow_private_network,
            timeout=config.fetch_timeout,
            max_bytes=config.fetch_max_bytes,
            deny_domains=tuple(config.deny_domains),
            allow_domains=tuple(config.allow_domains),
        )
        self.client = make_client(config.user_agent)
        self.cache = PageCache(config.cache_dir / "pages") if config.page_cache else None
        self.robots = Robots(self.client, self.policy, config.user_agent) if config.robots_txt else None
        self._hosts: defaultdict[str, asyncio.Semaphore] = defaultdict(lambda: asyncio.Semaphore(PER_HOST))

    async def fetch(self, url: str) -> Page:
        """Fetch `url` and return its main text; raise FetchError on any failure."""
        url = normalize_url(url)
        reach, policy, robots = current_reach(), reach_policy(self.policy), self.robots is not None
        cached = self.cache.find(url, policy, robots) if self.cache else None
        if cached is not None:
            reach.inside = cached.inside
            return cached.page
        async with self._hosts[urlsplit(url).netloc.lower()]:
            if self.robots is not None and not await self.robots.allowed(url):
                raise FetchError("robots", "the site's robots.txt asks crawlers not to fetch this page")
            raw = await guarded_get(self.client, url, policy)
        page = await self._to_page(raw)
        reach.inside = raw.inside
        if self.cache is not None:
            await asyncio.to_thread(self.cache.keep, page, policy, robots, raw.inside)
        return page

    async def _to_page(self, raw: RawResponse) -> Page:
        kind = sniff_type(raw.content_type, raw.body)
        cut = False
        if kind == "application/pdf":
            from rumination.web.pdf import extract_pdf

            title, text = await extract_pdf(
                raw.body, timeout=self.config.pdf_timeout, max_memory_mb=self.config.pdf_max_memory_mb
            )
        elif kind in HTML_TYPES or kind in TEXT_TYPES or kind.startswith("text/"):
            text = await asyncio.to_thread(decode_body, raw.body, raw.charset, self.config.fetch_max_bytes)
            title = ""
            if kind in HTML_TYPES:
                title, text, cut = await extract_page(
                    text,
                    raw.final_url,
                    timeout=self.config.extract_timeout,
                    max_memory_mb=self.config.extract_max_memory_mb,
                )
            elif kind in MARKDOWN_TYPES:
                title = markdown_title(text)
        else:
            raise FetchError("unsupported", f"binary content skipped ({kind})")
        if not text.strip():
            raise FetchError("empty", "the page has no readable text (it may need JavaScript)")
        if raw.truncated:
            text += "\n\n[truncated: the page is larger than the download limit]"
        return Page(
            url=raw.url,
            final_url=raw.final_url,
            title=title,
            text=text,
            content_type=kind,
            truncated=raw.truncated or cut,
        )

    async def aclose(self) -> None:
        """Close the HTTP client."""
        if self.robots is not None:
            self.robots.close()
        await self.client.aclose()
