"""Clients that try to lock others out or to read the daemon from a web page (issue 19, items 3-4)."""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from support.daemon_proc import FIXTURE_MODEL, DaemonProcess

pytestmark = pytest.mark.skipif(not FIXTURE_MODEL.is_file(), reason="fixture model missing")

HELD = 300  # idle and half-sent connections, all on loopback
MAX_CONNECTIONS = 32
READ_TIMEOUT = 2
ORIGIN = "http://localhost:3000"


@pytest.fixture(scope="module")
def strict(tmp_path_factory) -> Iterator[DaemonProcess]:
    """A daemon with a small connection limit, short read deadlines, one extra host name and CORS."""
    tmp = tmp_path_factory.mktemp("strict")
    proc = DaemonProcess(["--ctx-size", "256", "--max-tokens", "2", "--max-connections", str(MAX_CONNECTIONS),
                          "--read-timeout", str(READ_TIMEOUT), "--allowed-host", "my.box",
                          "--cors-origin", ORIGIN], tmp).wait_ready()
    yield proc
    assert proc.stop() == 0, proc.output()


def _address(daemon: DaemonProcess) -> tuple[str, int]:
    parts = urlsplit(daemon.url)
    return parts.hostname, parts.port


@contextlib.contextmanager
def _held_connections(daemon: DaemonProcess, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections: half send nothing, half stop in the middle of a request head."""
    socks: list[socket.socket] = []
    try:
        for i in range(count):
            sock = socket.create_connection(_address(daemon), timeout=30)
            if i % 2:
                sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Le")
            socks.append(sock)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def _read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or resets it)."""
    sock.settimeout(60)
    chunks = []
    with contextlib.suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _json_error(raw: bytes, status: int) -> dict:
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), raw[:200]
    assert b"content-type: application/json" in head.lower()
    return json.loads(body)["error"]


def test_idle_and_half_sent_connections_do_not_lock_out_the_shared_daemon(daemon, auth) -> None:
    with _held_connections(daemon, HELD):
        health = httpx.get(daemon.url + "/health", headers=auth, timeout=30)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        answer = httpx.post(daemon.url + "/v1/completions", headers=auth, timeout=120,
                            json={"prompt": "Hello", "max_tokens": 2})
        assert answer.status_code == 200, answer.text


def test_past_the_connection_limit_idle_connections_make_room(strict) -> None:
    with _held_connections(strict, HELD) as socks:  # ten times the limit
        health = httpx.get(strict.url + "/health", timeout=30)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        # The oldest idle connections were closed to make room: the first one is gone.
        assert _read_all(socks[0]) == b""


def test_a_half_sent_request_head_gets_a_408_and_is_closed(strict) -> None:
    with socket.create_connection(_address(strict), timeout=30) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n")
        assert _json_error(_read_all(sock), 408)["code"] == "request_timeout"


def test_a_silent_connection_is_closed(strict) -> None:
    with socket.create_connection(_address(strict), timeout=30) as sock:
        assert _read_all(sock) == b""


def test_a_body_that_stops_arriving_gets_a_408(strict) -> None:
    with socket.create_connection(_address(strict), timeout=30) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 100\r\n\r\n{\"prompt\":")
        error = _json_error(_read_all(sock), 408)
        assert error["code"] == "request_timeout" and "body" in error["message"]


def test_a_keep_alive_connection_must_send_its_next_head_in_time(strict) -> None:
    with socket.create_connection(_address(strict), timeout=30) as sock:
        # One complete request, then the start of the next one, never finished.
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\nGET /health HTTP/1.1\r\nHo")
        raw = _read_all(sock)
        assert raw.startswith(b"HTTP/1.1 200 ")
        assert _json_error(raw[raw.index(b"HTTP/1.1 408 "):], 408)["code"] == "request_timeout"


# -- DNS rebinding, content types, CORS -----------------------------------------------------------
REBIND = "rebind.attacker.example"


@pytest.mark.parametrize("method, path, body", [
    ("POST", "/v1/search", {"query": "dog"}),
    ("POST", "/v1/completions", {"prompt": "Hello", "max_tokens": 2}),
    ("POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}),
    ("GET", "/health", None),
    ("GET", "/v1/models", None),
])
def test_a_foreign_host_name_is_refused(daemon, auth, method, path, body) -> None:
    for host in (REBIND, f"{REBIND}:{_address(daemon)[1]}", "localhost.attacker.example", "127.0.0.1.nip.io", ""):
        headers = {**auth, "Host": host, "Content-Type": "text/plain"}
        response = httpx.request(method, daemon.url + path, headers=headers, timeout=60,
                                 content=json.dumps(body) if body else None)
        assert response.status_code == 403, (host, response.text)
        assert response.json()["error"]["code"] == "host_not_allowed"


def test_loopback_host_names_are_accepted(daemon, auth) -> None:
    port = _address(daemon)[1]
    for host in ("localhost", f"localhost:{port}", f"127.0.0.1:{port}", "127.0.0.2", f"[::1]:{port}",
                 "LOCALHOST.", "app.localhost"):
        response = httpx.get(daemon.url + "/health", headers={**auth, "Host": host}, timeout=30)
        assert response.status_code == 200, (host, response.text)
    other_ip = httpx.get(daemon.url + "/health", headers={**auth, "Host": "192.168.1.9"}, timeout=30)
    assert other_ip.status_code == 403  # bound to loopback: only loopback addresses


def test_the_rebinding_request_of_the_issue_gets_nothing(daemon, auth) -> None:
    """Host of the attacker and a text/plain body (no CORS preflight): refused either way."""
    body = json.dumps({"query": "dog barks"})
    for host in (REBIND, "localhost"):
        response = httpx.post(daemon.url + "/v1/search", headers={**auth, "Host": host, "Content-Type": "text/plain"},
                              content=body, timeout=60)
        assert response.status_code in (403, 415)
        assert "data" not in response.json()


def test_allowed_host_names_are_accepted(strict) -> None:
    assert httpx.get(strict.url + "/health", headers={"Host": "my.box:80"}, timeout=30).status_code == 200
    assert httpx.get(strict.url + "/health", headers={"Host": "other.box"}, timeout=30).status_code == 403


def test_no_cors_headers_without_cors_origin(daemon, auth) -> None:
    response = httpx.get(daemon.url + "/health", headers={**auth, "Origin": ORIGIN}, timeout=30)
    assert "access-control-allow-origin" not in response.headers
    preflight = httpx.options(daemon.url + "/v1/completions", timeout=30, headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_only_for_the_given_origin(strict) -> None:
    def preflight(origin: str) -> httpx.Response:
        return httpx.options(strict.url + "/v1/completions", timeout=30, headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization"})

    assert preflight(ORIGIN).headers.get("access-control-allow-origin") == ORIGIN
    assert "access-control-allow-origin" not in preflight("http://evil.example").headers
    answer = httpx.post(strict.url + "/v1/completions", json={"prompt": "Hi", "max_tokens": 1},
                        headers={"Origin": ORIGIN}, timeout=120)
    assert answer.status_code == 200 and answer.headers.get("access-control-allow-origin") == ORIGIN


def test_the_api_key_still_guards_everything(daemon) -> None:
    for path in ("/health", "/v1/models"):
        assert httpx.get(daemon.url + path, timeout=30).status_code == 401


def test_host_policy_rules() -> None:
    from neuro_bitnet.server.hosts import HostPolicy

    loopback = HostPolicy("127.0.0.1")
    assert loopback.allows("localhost:11435") and loopback.allows("[::1]") and loopback.allows("127.0.0.1")
    assert not loopback.allows("10.0.0.1") and not loopback.allows(REBIND) and not loopback.allows(None)
    lan = HostPolicy("0.0.0.0", ["my.box"])
    assert lan.allows("10.0.0.1:11435") and lan.allows("my.box") and not lan.allows(REBIND)
    named = HostPolicy("server.lan")
    assert named.allows("server.lan:11435") and not named.allows(REBIND)
    assert HostPolicy("127.0.0.1", ["*"]).allows(REBIND)


class _FakeTransport:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


class _FakeConnection:
    def __init__(self, in_request: bool) -> None:
        self.in_request = in_request
        self.transport = _FakeTransport()


def test_the_guard_evicts_the_oldest_idle_connection_and_never_a_busy_one() -> None:
    from neuro_bitnet.server.connections import ConnectionGuard

    guard = ConnectionGuard(max_connections=3, read_timeout=30)
    busy, idle_old, idle_new = _FakeConnection(True), _FakeConnection(False), _FakeConnection(False)
    for conn in (busy, idle_old, idle_new):
        assert guard.admit(conn)  # type: ignore[arg-type]
    newcomer = _FakeConnection(False)
    assert guard.admit(newcomer)  # type: ignore[arg-type]
    assert idle_old.transport.closed and not busy.transport.closed and not idle_new.transport.closed
    assert guard.open == 3 and guard.evicted == 1
    for conn in (idle_new, newcomer):
        conn.in_request = True
    assert not guard.admit(_FakeConnection(False))  # type: ignore[arg-type]  # every slot is busy
    assert guard.refused == 1 and guard.open == 3


@pytest.mark.slow
def test_when_every_connection_is_busy_a_newcomer_gets_a_503_json(tmp_path) -> None:
    proc = DaemonProcess(["--ctx-size", "256", "--max-connections", "2", "--read-timeout", "600"], tmp_path)
    proc.wait_ready()
    busy: list[socket.socket] = []
    try:
        for _ in range(2):  # requests in progress: the app waits for their bodies
            sock = socket.create_connection(_address(proc), timeout=30)
            sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\nExpect: 100-continue\r\n\r\n")
            assert sock.recv(1024).startswith(b"HTTP/1.1 100 ")  # the server is reading this body now
            busy.append(sock)
        health = httpx.get(proc.url + "/health", timeout=30)
        assert health.status_code == 503
        assert health.json()["error"]["code"] == "too_many_connections"
    finally:
        for sock in busy:
            sock.close()
        assert proc.stop() == 0, proc.output()
