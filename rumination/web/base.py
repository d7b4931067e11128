"""The fetcher Protocol and the page it returns."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field

FetchErrorKind = Literal[
    "refused",
    "robots",
    "timeout",
    "network",
    "http",
    "redirects",
    "too_large",
    "unsupported",
    "empty",
    "pdf",
    "not_found",
    "unreadable",
]


class FetchError(Exception):
    """A fetch that failed; `kind` classifies it and the message is shown to the model."""

    def __init__(self, kind: FetchErrorKind, message: str):
        super().__init__(message)
        self.kind: FetchErrorKind = kind


class Page(BaseModel):
    """A fetched page's main text."""

    url: str
    final_url: str
    title: str
    text: str
    content_type: str
    truncated: bool = False
    fetched_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


@runtime_checkable
class Fetcher(Protocol):
    """Anything that turns a URL into a Page, raising FetchError with a readable message on failure."""

    name: str

    async def fetch(self, url: str) -> Page: ...

    async def aclose(self) -> None: ...
