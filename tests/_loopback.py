"""A small HTTP file server on 127.0.0.1 for download tests (no real network).

Typical fixture (each test module defines its own three lines)::

    @pytest.fixture
    def loopback():
        with LoopbackServer() as server:
            yield server

and in a test::

    with LoopbackServer() as server:
        url = server.add("/data.zip", payload)          # serves payload, honours Range
        url = server.add("/cut.zip", payload, truncate=[100])  # 1st reply stops after 100 bytes
        ...
        server.requests                                  # [(path, Range header or None), ...]

The server runs in a daemon thread, answers each request within a few
seconds (socket timeouts), and is shut down when the ``with`` block ends.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    """What one path serves.

    data: the file's bytes.
    honor_range: answer ``Range: bytes=N-`` with 206; False plays a server that
        ignores Range (always 200 with the whole file).
    truncate: per request, in order, how many body bytes to send before closing
        the connection early (``None`` = send it all); requests after the list
        get the whole body.
    status: answer every request with this HTTP error status instead.
    """

    data: bytes
    honor_range: bool = True
    truncate: list[int | None] = field(default_factory=list)
    status: int | None = None
    hits: int = 0


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    timeout = 5  # seconds a stalled client may hold a handler thread

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        owner = self.server.owner
        path = self.path.split("?")[0]
        range_header = self.headers.get("Range")
        with owner.lock:
            owner.requests.append((path, range_header))
            route = owner.routes.get(path)
            if route is not None:
                cut = route.truncate[route.hits] if route.hits < len(route.truncate) else None
                route.hits += 1
        if route is None:
            self.send_error(404, "not found")
            return
        if route.status is not None:
            self.send_error(route.status)
            return
        data, start = route.data, 0
        m = re.fullmatch(r"bytes=(\d+)-", range_header or "")
        if m and route.honor_range:
            start = int(m[1])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        self.wfile.write(body if cut is None else body[:cut])
        self.close_connection = True

    def log_message(self, format, *args) -> None:  # keep test output quiet
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: LoopbackServer


class LoopbackServer:
    """HTTP server on 127.0.0.1 (a free port) serving in-memory files."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, path: str, data: bytes, **options) -> str:
        """Serve ``data`` at ``path`` (options: see :class:`Route`); returns its URL."""
        self.routes[path] = Route(data, **options)
        return self.base_url + path

    def hits(self, path: str) -> list[str | None]:
        """The Range header of every request made for ``path`` so far."""
        with self.lock:
            return [r for p, r in self.requests if p == path]

    def start(self) -> LoopbackServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def unused_port() -> int:
    """A local port nothing listens on (for 'server unreachable' tests)."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
