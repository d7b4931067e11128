"""One scriptable HTTP server on loopback for the tests: scripted answers per path, and a record of every request."""

from __future__ import annotations

import socket
import struct
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

HTML = "text/html; charset=utf-8"


class Headers(Mapping[str, str]):
    """Request headers with case-insensitive names; a header sent twice keeps both values, comma-joined."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._items: dict[str, tuple[str, str]] = {}
        for name, value in pairs:
            if (old := self._items.get(name.lower())) is not None:
                value = f"{old[1]}, {value}"
            self._items[name.lower()] = (name, value)

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


@dataclass(frozen=True)
class Request:
    """One request as the server got it: method, path, query (first value of each name), headers, body."""

    method: str
    path: str
    query: dict[str, str]
    headers: Headers
    body: bytes | None


Route = Callable[["Exchange"], None]


@dataclass(frozen=True)
class Reply:
    """A fixed answer: status, body, Content-Type (None sends none) and extra headers; Content-Length is set."""

    status: int = 200
    body: bytes = b""
    content_type: str | None = HTML
    headers: Mapping[str, str] = field(default_factory=dict)

    def __call__(self, exchange: Exchange) -> None:
        exchange.send(self.status, self.body, self.content_type, self.headers)


NOT_FOUND = Reply(404, b"not found")


class Exchange(BaseHTTPRequestHandler):
    """The handler a route gets: the recorded request, its hit number, and ways to answer, stall, drip or reset."""

    server: Loopback
    received: Request
    hit: int  # 1 for the first request to this path, 2 for the second, ...

    def setup(self) -> None:
        self.protocol_version = self.server.protocol
        super().setup()

    def log_message(self, *args: object) -> None:
        """Keep test output quiet."""

    def do_GET(self) -> None:
        self._dispatch(None)

    def do_POST(self) -> None:
        self._dispatch(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

    def _dispatch(self, body: bytes | None) -> None:
        parts = urlsplit(self.path)
        self.received = Request(
            method=self.command,
            path=parts.path,
            query={k: v[0] for k, v in parse_qs(parts.query).items()},
            headers=Headers(self.headers.items()),
            body=body,
        )
        self.hit = self.server.record(self.received)
        self.server.route_for(parts.path)(self)

    # --- answering ----------------------------------------------------------------------------------------------------

    def send_head(
        self,
        status: int,
        content_type: str | None = HTML,
        headers: Mapping[str, str] | None = None,
        *,
        length: int | None = None,
        reason: str | None = None,
    ) -> None:
        """Send the status line and headers; `length` declares a Content-Length (which the body may then break)."""
        self.send_response(status, reason)
        if content_type:
            self.send_header("Content-Type", content_type)
        if length is not None:
            self.send_header("Content-Length", str(length))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()

    def send(
        self, status: int, body: bytes = b"", content_type: str | None = HTML, headers: Mapping[str, str] | None = None
    ) -> None:
        """Send a whole answer with a matching Content-Length."""
        self.send_head(status, content_type, headers, length=len(body))
        self.wfile.write(body)

    def send_chunked(self, chunks: Iterable[bytes], content_type: str = HTML) -> None:
        """Stream `chunks` with chunked transfer encoding (no Content-Length) until done or the client leaves."""
        self.send_head(200, content_type, {"Transfer-Encoding": "chunked"})
        try:
            for chunk in chunks:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def drip(self, chunks: Iterable[bytes], every: float) -> None:
        """Write `chunks` one by one, `every` seconds apart, until done, the client leaves or the server stops."""
        try:
            for chunk in chunks:
                self.wfile.write(chunk)
                self.wfile.flush()
                if self.stall(every):
                    break
        except OSError:
            pass
        self.close_connection = True

    def stall(self, seconds: float) -> bool:
        """Wait `seconds` (the fault itself, not a guess), cut short when the server stops; True if it stopped."""
        return self.server.stopping.wait(seconds)

    def reset(self) -> None:
        """Abort the connection with a TCP RST (SO_LINGER 0), as a crashing server or middlebox does."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.connection.close()
        self.close_connection = True


class Loopback(ThreadingHTTPServer):
    """HTTP on `host`, port 0, answering from `routes` (exact path) or `fallback`; serve via fixture or `with`."""

    daemon_threads = True

    def __init__(
        self,
        routes: Mapping[str, Route] | None = None,
        *,
        fallback: Route = NOT_FOUND,
        host: str = "127.0.0.1",
        protocol: str = "HTTP/1.1",
    ) -> None:
        super().__init__((host, 0), Exchange)
        self.routes = dict(routes or {})
        self.fallback = fallback
        self.protocol = protocol
        self.hits: Counter[str] = Counter()
        self.requests: list[Request] = []
        self.stopping = threading.Event()
        self._arrived = threading.Condition()
        self._thread: threading.Thread | None = None

    # --- what a test reads --------------------------------------------------------------------------------------------

    @property
    def base(self) -> str:
        """The scheme, host and port, without a trailing slash."""
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, path: str = "/") -> str:
        """The URL of `path` on this server."""
        return self.base + path

    def requests_to(self, path: str) -> list[Request]:
        """The requests for `path`, in arrival order."""
        with self._arrived:
            return [request for request in self.requests if request.path == path]

    def wait_for(self, path: str, count: int = 1, timeout: float = 30) -> None:
        """Block until `path` has been requested `count` times: a readiness signal instead of a guessed sleep."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: self.hits[path] >= count, timeout):
                raise AssertionError(f"{path} was requested {self.hits[path]} times in {timeout} s, not {count}")

    # --- serving ------------------------------------------------------------------------------------------------------

    def record(self, request: Request) -> int:
        """Count and keep `request`, wake whoever waits for it, and return its hit number for its path."""
        with self._arrived:
            self.requests.append(request)
            self.hits[request.path] += 1
            self._arrived.notify_all()
            return self.hits[request.path]

    def route_for(self, path: str) -> Route:
        """The route that answers `path`."""
        return self.routes.get(path, self.fallback)

    def handle_error(self, request: object, client_address: object) -> None:
        """Clients hanging up early (cancelled, capped or timed-out fetches) and resets are expected in tests."""

    def shutdown(self) -> None:
        """Cut stalled and dripping answers short, then stop `serve_forever` (which must be running)."""
        self.stopping.set()
        super().shutdown()

    def start(self) -> Loopback:
        """Serve from a daemon thread."""
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, cut stalled and dripping answers short, and close the listening socket."""
        self.stopping.set()
        if self._thread is not None:
            self.shutdown()
            self._thread = None
        self.server_close()

    def __enter__(self) -> Loopback:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
