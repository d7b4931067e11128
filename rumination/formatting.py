"""Observation formats: numbered search results and page text, as the model expects them."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Sequence

from rumination import reading
from rumination.protocol import SearchLayout
from rumination.results import ToolResult
from rumination.sanitize import clean_text
from rumination.search.base import SearchHit
from rumination.web.extract import strip_title

# The search-result markup itself (see protocol.SearchLayout): text from a server must never open, close or forge a
# result card, whether it arrives as a title, a snippet, a page's text or an error message.
_MARKUP = str.maketrans({"【": "[", "】": "]", "†": "+"})
_URL_MARKUP = str.maketrans({"【": "%E3%80%90", "】": "%E3%80%91", "†": "%E2%80%A0"})


def defuse_markup(text: str) -> str:
    """`text` that cannot open, close or forge a search-result card: 【 】 † become [ ] +."""
    return text.translate(_MARKUP)


def _one_line(text: str) -> str:
    return " ".join(defuse_markup(clean_text(text)).split())


def _url(url: str) -> str:
    """A URL on one line whose result markup is percent-encoded (it still leads to the same page)."""
    return "".join(clean_text(url).translate(_URL_MARKUP).split())


def observation(result: ToolResult) -> str:
    """What the model is shown for `result`: clean text, the result markup kept only in a search's own list."""
    text = clean_text(result.observation)
    return text if result.ok and result.results else defuse_markup(text)


def format_search_results(hits: Sequence[SearchHit], layout: SearchLayout = "glm4") -> str:
    """Number results from 0: the card's `【i†title†url\\nsnippet】` or the GLM-4 browser's layout."""
    blocks = []
    for i, hit in enumerate(hits):
        title, snippet = _one_line(hit.title), _one_line(hit.snippet)
        url = _url(hit.url)
        if layout == "card":
            blocks.append(f"【{i}†{title}†{url}\n{snippet}】")
        else:
            blocks.append(f"【{i}†{title}†{url}】\n{snippet}")
    return "\n\n".join(blocks)


def read_page(
    title: str,
    url: str,
    text: str,
    max_tokens: int,
    truncate: reading.Truncator,
    query: Counter[str] | None = None,
    seen: Collection[int] = (),
) -> tuple[str, reading.Cut]:
    """A title and URL header, then the page text (without a heading that repeats the title) within `max_tokens`.

    A page over the budget shows its lead, its outline and the passages that matter most to `query` (reading.py);
    `seen` holds the passages shown by earlier reads, which a read again leaves out.
    """
    url = _url(url)
    heading = _one_line(title) or url
    body = strip_title(defuse_markup(clean_text(text)).strip(), heading)
    cut = reading.cut(body, max_tokens, truncate, query or Counter(), seen)
    return f"# {heading}\nURL: {url}\n\n{cut.text}", cut


def format_page(title: str, url: str, text: str, max_tokens: int, truncate: reading.Truncator) -> str:
    """The page as a first read with no query shows it (read_page)."""
    return read_page(title, url, text, max_tokens, truncate)[0]
