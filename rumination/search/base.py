"""The search engine Protocol and its result type."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from pydantic import BaseModel


class SearchHit(BaseModel):
    """One search result."""

    title: str
    url: str
    snippet: str = ""


class SearchError(Exception):
    """A search that failed; the message is shown to the model and the user."""


@runtime_checkable
class SearchEngine(Protocol):
    """Anything that turns a query into a list of hits."""

    name: str

    async def search(self, query: str, max_results: int) -> list[SearchHit]: ...

    async def aclose(self) -> None: ...
