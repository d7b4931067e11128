"""Observation formats: numbered search results and page text, as the model expects them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rumination.protocol import SearchLayout
from rumination.sanitize import clean_text
from rumination.search.base import SearchHit
from rumination.web.extract import strip_title

Truncator = Callable[[str, int], tuple[str, int]]


# The result markup itself: a title or snippet must not be able to open a forged result.
_MARKUP = str.maketrans({"【": "[", "】": "]", "†": "+"})
_URL_MARKUP = str.maketrans({"【": "%E3%80%90", "】": "%E3%80%91", "†": "%E2%80%A0"})


def _one_line(text: str) -> str:
    return " ".join(clean_text(text).translate(_MARKUP).split())


def format_search_results(hits: Sequence[SearchHit], layout: SearchLayout = "glm4") -> str:
    """Number results from 0: the card's `【i†title†url\\nsnippet】` or the GLM-4 browser's layout."""
    blocks = []
    for i, hit in enumerate(hits):
        title, snippet = _one_line(hit.title), _one_line(hit.snippet)
        url = "".join(clean_text(hit.url).translate(_URL_MARKUP).split())
        if layout == "card":
            blocks.append(f"【{i}†{title}†{url}\n{snippet}】")
        else:
            blocks.append(f"【{i}†{title}†{url}】\n{snippet}")
    return "\n\n".join(blocks)


def format_page(title: str, url: str, text: str, max_tokens: int, truncate: Truncator) -> str:
    """A title and URL header, then the page text (without a heading that repeats the title) cut to `max_tokens`."""
    heading = _one_line(title) or url
    body = strip_title(clean_text(text).strip(), heading)
    kept, total = truncate(body, max_tokens)
    if len(kept) < len(body):
        kept = kept.rstrip() + f"\n\n[truncated: showing the first {max_tokens:,} tokens of about {total:,}]"
    return f"# {heading}\nURL: {url}\n\n{kept}"
