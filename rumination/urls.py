"""URL rules in one place: normalising, comparing, finding URLs in text, domain lists, local:// addresses."""

from __future__ import annotations

import contextlib
import functools
import re
from collections.abc import Iterable
from urllib.parse import unquote, urljoin, urlsplit, urlunsplit

LOCAL_SCHEME = "local://"

# A URL written in text ends at whitespace, quotes, brackets, full-width punctuation or the search-result markup;
# a parenthesised part is its own (https://en.wikipedia.org/wiki/Mercury_(planet)), a closing parenthesis alone is not.
_URL_CHAR = r"[^\s<>\"'()\]，。；：！？、（）「」『』《》〈〉【】†]"
URL_PATTERN = re.compile(rf"(?:https?|local)://(?:{_URL_CHAR}|\({_URL_CHAR}*\))+")
# A Markdown link's target, parenthesised parts included (at most 4,000 characters, like a report's).
LINK_TARGET = re.compile(r"\]\(((?:[^()\s]|\([^()\s]{0,500}\)){1,4000})\)")
_LOCAL_URL = re.compile(r"local://([A-Za-z0-9_-]+)/([0-9]{1,19})/?")  # ASCII digits, at most SQLite's largest id
MAX_LOCAL_ID = 2**63 - 1
URL_END = ".,;:"  # sentence punctuation after a URL is not part of it
# Escapes of / ? # % & = + ;: decoded, the character would change what the URL says.
_MEANINGFUL_ESCAPE = re.compile(r"(%(?:2[356BF]|3[BDF]))", re.I)
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
MAX_HOST = 253  # characters in a DNS name: longer hosts are compared as written (IDNA work grows with the square)


def normalize_url(url: str) -> str:
    """Give a bare domain such as `example.org/x` an https:// scheme; strip surrounding spaces."""
    url = url.strip()
    if "://" not in url and not url.lower().startswith(("http:", "https:")) and ":" not in url.split("/")[0]:
        return "https://" + url
    return url


def url_key(url: str) -> str:
    """Compare URLs without scheme, www., fragment, or trailing slash (or sentence punctuation after them), escaped
    or not (…/K%C3%B6ln is …/Köln, a Unicode host name its ASCII IDNA form)."""
    url = url.strip().rstrip(URL_END)
    if is_local(url):  # its own namespace: local://papers/1 is not https://papers/1
        return url.lower().rstrip("/")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return url
    host = _norm_host(parts.hostname or "")
    if ":" in host:  # an IPv6 address keeps its brackets, or its last group would read as the port
        host = f"[{host}]"
    if port:
        host = f"{host}:{port}"
    path, query = _unescaped(parts.path).rstrip("/"), _unescaped(parts.query)
    return urlunsplit(("", host, path, query, "")).removeprefix("//")


def _unescaped(part: str) -> str:
    """`part` percent-decoded, but for the escapes whose character would change its meaning (kept, upper case)."""
    pieces = _MEANINGFUL_ESCAPE.split(part)  # the kept escapes at odd indexes
    return "".join(piece.upper() if i % 2 else _decoded(piece) for i, piece in enumerate(pieces))


def _decoded(piece: str) -> str:
    """`piece` percent-decoded as UTF-8 (a % it holds as %25), or as written where it is not UTF-8 (Latin-1 sites)."""
    try:
        return unquote(piece, errors="strict").replace("%", "%25")
    except UnicodeDecodeError:
        return _ESCAPE.sub(lambda m: m.group().upper(), piece)


def without_userinfo(url: str) -> str:
    """`url` without a user name and password (an endpoint the user configured with its credentials)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def has_userinfo(url: str) -> bool:
    """Whether `url` carries a user name or password (a malformed one: whether it has an @ at all)."""
    try:
        return "@" in urlsplit(url).netloc
    except ValueError:
        return "@" in url


def find_urls(text: str, base: str | None = None) -> list[str]:
    """The http(s) and local:// URLs written in `text`; with `base`, also Markdown link targets resolved against it."""
    urls = [url.rstrip(URL_END) for url in URL_PATTERN.findall(text)]
    if base:
        for href in LINK_TARGET.findall(text):
            with contextlib.suppress(ValueError):
                urls.append(urljoin(base, href))
    return urls


# ---------------------------------------------------------------- domain allow and deny lists


def _norm_host(host: str) -> str:
    """A host name lower case, without a trailing dot or www., a Unicode one in its ASCII IDNA form."""
    host = host.strip().lower().rstrip(".")
    if not host.isascii() and len(host) <= MAX_HOST:
        with contextlib.suppress(UnicodeError):  # a label too long or empty: compared as written
            host = host.encode("idna").decode("ascii")
    return host.removeprefix("www.")


@functools.lru_cache(maxsize=65536)  # lists are checked on every open and redirect hop
def normalize_domain(entry: str) -> str:
    """A config entry ("Example.COM", "www.example.com", "*.example.com", "https://example.com/x") as a bare host."""
    entry = entry.strip()
    if "://" in entry:
        try:
            entry = urlsplit(entry).hostname or ""
        except ValueError:
            entry = ""
    else:
        entry = entry.split("/", 1)[0].rsplit("@", 1)[-1]
        if entry.count(":") == 1:
            entry = entry.split(":", 1)[0]
    return _norm_host(entry.lstrip("*").lstrip(".").removeprefix("[").removesuffix("]"))


def normalize_domains(entries: Iterable[str]) -> list[str]:
    """Every entry as a bare host, empty ones dropped."""
    return [domain for domain in map(normalize_domain, entries) if domain]


def _under(host: str, domains: Iterable[str]) -> bool:
    return any(host == d or host.endswith("." + d) for d in domains)


def domain_allowed(url: str, allow: Iterable[str], deny: Iterable[str]) -> bool:
    """Whether `url`'s host is not (under) a denied domain and, when `allow` is non-empty, is (under) an allowed one."""
    if is_local(url):  # a document of an index the user named, not a web domain: the lists do not apply
        return True
    allowed, denied = normalize_domains(allow), normalize_domains(deny)
    try:
        raw = urlsplit(url.strip()).hostname
    except ValueError:
        raw = None
    if not raw:
        return not allowed
    host = _norm_host(raw)
    if _under(host, denied):
        return False
    return not allowed or _under(host, allowed)


# ---------------------------------------------------------------- local:// documents


def is_local(url: str) -> bool:
    """Whether `url` names a document of a local index."""
    return url.strip().lower().startswith(LOCAL_SCHEME)


def local_url(index: str, doc_id: int) -> str:
    """The address of document `doc_id` of the local index `index`."""
    return f"{LOCAL_SCHEME}{index}/{doc_id}"


def local_index(engine: str) -> str | None:
    """The index a `local:NAME` search engine searches ("" when unnamed); None for any other engine."""
    kind, _, name = engine.partition(":")
    return name if kind == "local" else None


def opens_web(engines: Iterable[str], allow_web: bool) -> bool:
    """Whether a run searching `engines` may open web pages: it searches the web, or `allow_web` says so."""
    return allow_web or any(local_index(engine) is None for engine in engines)


def parse_local_url(url: str) -> tuple[str, int] | None:
    """(index name, document id) of a local://NAME/ID address; None when it is not one or the id cannot exist."""
    match = _LOCAL_URL.fullmatch(url.strip())
    if match is None or int(match.group(2)) > MAX_LOCAL_ID:
        return None
    return match.group(1), int(match.group(2))
