"""A loopback HTTP server that answers like Wikipedia and SearxNG, from recorded responses."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator
from urllib.parse import parse_qs, unquote, urlparse

RECORDED = Path(__file__).resolve().parents[1] / "web" / "recorded"


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output quiet
        pass

    def do_GET(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        self.server.requests.append((url.path, parse_qs(url.query)))
        parts = url.path.strip("/").split("/")
        if parts[0] == "slow":  # answers only once the test sets `release` (at the latest after 60 s)
            self.server.release.wait(60)
            parts = parts[1:]
        if parts[0] == "searx403":
            return self._send(403, b"Forbidden")
        if parts[0] == "searx" and parts[1:] == ["search"]:
            return self._file("searxng_search.json")
        lang = parts[0]
        if parts[1:] == ["w", "api.php"]:
            query = parse_qs(url.query).get("srsearch", [""])[0]
            if "zzz" in query:
                return self._file("wikipedia_empty_search.json")
            return self._file(f"wikipedia_{lang}_search.json")
        if parts[1:4] == ["api", "rest_v1", "page"] and parts[4] == "summary":
            return self._file(f"wikipedia_{lang}_summary_{unquote(parts[5])}.json")
        self._send(404, b"{}")

    def _file(self, name: str) -> None:
        path = RECORDED / name
        if not path.is_file():
            return self._send(404, b'{"type":"https://mediawiki.org/wiki/HyperSwitch/errors/not_found"}')
        self._send(200, path.read_bytes())

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout tests)
            pass


@contextmanager
def recorded_web_server() -> Iterator[ThreadingHTTPServer]:
    """Serve the recorded responses on 127.0.0.1 (a free port) while the block runs."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.requests = []
    httpd.release = threading.Event()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd
    finally:
        httpd.release.set()
        httpd.shutdown()
        httpd.server_close()


def base_url(server: ThreadingHTTPServer) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}"
