"""A loopback stand-in for the Hugging Face hub, for download tests.

A real `ThreadingHTTPServer` on 127.0.0.1 serves registered bytes at
`/{repo}/resolve/{revision}/{file}` with Range, ETag, `X-Linked-Etag` and `X-Linked-Size`, and
can be told to misbehave (see `Faults`). Every request is recorded.
"""

from __future__ import annotations

import hashlib
import json
import random
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


@dataclass
class Faults:
    """Switchable misbehaviour; each applies to GET/HEAD of served files."""

    status: int | None = None  # answer every file request with this status (404, 401, 500...)
    status_times: int | None = None  # ...only this many times (None: always)
    cut_after: int | None = None  # close the connection after sending this many body bytes
    cut_times: int | None = None  # ...only this many times (None: always)
    wrong_bytes: bool = False  # corrupt the body (headers still announce the true hash)
    stall_after: int | None = None  # after this many body bytes, stop sending for stall_seconds
    stall_seconds: float = 10.0
    ignore_range: bool = False  # answer 200 with the whole file even when Range is sent
    throttle: float = 0.0  # seconds to sleep after each chunk
    chunk_size: int = 16 * 1024
    require_token: str | None = None  # 401 unless `Authorization: Bearer <token>`
    redirect: bool = False  # like the real hub: 302 to /cdn/..., LFS headers on the 302 only
    gate_after: int | None = None  # after this many body bytes, wait until `gate` is set
    gate: threading.Event = field(default_factory=threading.Event)
    no_length: bool = False  # no Content-Length nor X-Linked-Size: the body ends when the connection closes
    extra_bytes: int = 0  # with no_length: this many more bytes after the file (a server that never stops)


@dataclass
class HubFile:
    repo: str
    revision: str
    path: str
    data: bytes
    lfs: bool = True

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def size(self) -> int:
        return len(self.data)


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    status: int = 0


@dataclass
class HubServer:
    faults: Faults = field(default_factory=Faults)
    files: dict[str, HubFile] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    def add_file(self, repo: str, path: str, data: bytes, revision: str = "main", lfs: bool = True) -> HubFile:
        """Serve `data` at `/{repo}/resolve/{revision}/{path}`."""
        f = HubFile(repo, revision, path, data, lfs)
        self.files[f"/{repo}/resolve/{revision}/{path}"] = f
        return f

    def file_url(self, f: HubFile) -> str:
        return f"{self.url}/{f.repo}/resolve/{f.revision}/{f.path}"

    def gets(self) -> list[Request]:
        """GET requests for files (redirect targets included)."""
        return [r for r in self.requests if r.method == "GET"]

    def _take(self, name: str) -> bool:
        """Whether a counted fault fires now (decrements its `*_times` budget)."""
        with self._lock:
            times = getattr(self.faults, f"{name}_times")
            if times is None:
                return True
            if times <= 0:
                return False
            setattr(self.faults, f"{name}_times", times - 1)
            return True


def _make_handler(hub: HubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            pass

        def do_HEAD(self) -> None:
            self._serve(body=False)

        def do_GET(self) -> None:
            self._serve(body=True)

        def _record(self, status: int) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            hub.requests.append(Request(self.command, self.path, headers, status))

        def _plain(self, status: int, text: str = "", headers: dict[str, str] | None = None) -> None:
            self._record(status)
            body = text.encode()
            self.send_response(status)
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _serve(self, body: bool) -> None:
            faults = hub.faults
            path = unquote(urlparse(self.path).path)
            cdn = path.startswith("/cdn/")
            key = path[len("/cdn"):] if cdn else path
            f = hub.files.get(key)
            if faults.require_token and not cdn:
                if self.headers.get("Authorization") != f"Bearer {faults.require_token}":
                    return self._plain(401, "Invalid credentials")
            if faults.status is not None and hub._take("status"):
                return self._plain(faults.status, f"status {faults.status}")
            if f is None:
                hub_error = {"X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found"}
                return self._plain(404, "Entry not found", hub_error)
            lfs_headers = {"X-Linked-Size": str(f.size), "X-Linked-Etag": f'"{f.sha256}"'} if f.lfs else {}
            if faults.redirect and not cdn:
                return self._plain(302, "", {"Location": f"/cdn{key}", **lfs_headers})
            self._send_file(f, body, {} if cdn else lfs_headers)

        def _send_file(self, f: HubFile, body: bool, lfs_headers: dict[str, str]) -> None:
            faults = hub.faults
            data = f.data
            if faults.wrong_bytes:
                data = bytes(b ^ 0x5A for b in data[:64]) + data[64:]
            etag = f.sha256 if f.lfs else hashlib.sha1(f.data).hexdigest()
            start, status = 0, 200
            rng = self.headers.get("Range")
            if rng and not faults.ignore_range and rng.startswith("bytes=") and rng.endswith("-"):
                start = int(rng[len("bytes="):-1])
                if start >= len(data):
                    return self._plain(416, "", {"Content-Range": f"bytes */{len(data)}"})
                status = 206
            self._record(status)
            self.send_response(status)
            if faults.no_length:
                data = data + bytes(faults.extra_bytes)
                self.send_header("Connection", "close")
                self.close_connection = True
                lfs_headers = {k: v for k, v in lfs_headers.items() if k != "X-Linked-Size"}
            else:
                self.send_header("Content-Length", str(len(data) - start))
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("ETag", f'"{etag}"')
            for key, value in lfs_headers.items():
                self.send_header(key, value)
            if status == 206:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if not body:
                return
            cut = faults.cut_after if faults.cut_after is not None and hub._take("cut") else None
            sent, pos = 0, start
            stall_at = faults.stall_after
            gate_at = faults.gate_after
            try:
                while pos < len(data):
                    if cut is not None and sent >= cut:
                        self._abort()
                        return
                    if stall_at is not None and sent >= stall_at:
                        stall_at = None
                        hub._stop.wait(faults.stall_seconds)
                    if gate_at is not None and sent >= gate_at:
                        gate_at = None
                        while not faults.gate.wait(0.05) and not hub._stop.is_set():
                            pass
                    limits = [faults.chunk_size] + [b - sent for b in (cut, stall_at, gate_at) if b is not None]
                    chunk = data[pos:pos + max(min(limits), 1)]
                    self.wfile.write(chunk)
                    self.wfile.flush()
                    sent += len(chunk)
                    pos += len(chunk)
                    if faults.throttle and hub._stop.wait(faults.throttle):
                        return
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def _abort(self) -> None:
            self.wfile.flush()
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.close_connection = True

    return Handler


def hub_env(hub: HubServer, root: Path, **extra: str) -> dict[str, str]:
    """Environment variables pointing neuro at `hub` and at private dirs under `root`."""
    env = {
        "HF_ENDPOINT": hub.url,
        "NEURO_BITNET_MODELS_DIR": str(root / "models"),
        "NEURO_BITNET_CATALOG": str(root / "models.toml"),
        "NEURO_BITNET_TIMEOUT": "2",
        "NEURO_BITNET_DOWNLOAD_RETRIES": "0",
    }
    env.update(extra)
    return env


def write_catalog(path: Path, *entries: dict[str, object]) -> Path:
    """Write a user catalog TOML with one `[[models]]` table per entry."""
    lines = []
    for entry in entries:
        lines.append("[[models]]")
        for key, value in entry.items():
            if isinstance(value, str):
                lines.append(f"{key} = {json.dumps(value)}")
            elif isinstance(value, (list, tuple)):
                lines.append(f"{key} = [{', '.join(json.dumps(v) for v in value)}]")
            else:
                lines.append(f"{key} = {value}")
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def tiny_model(hub: HubServer, root: Path, size: int = 256 * 1024, *, pin: bool = True,
               model_id: str = "tiny", lfs: bool = True, seed: int = 1) -> HubFile:
    """Serve a generated file as `test/tiny` on the hub and list it in the user catalog."""
    data = random.Random(seed).randbytes(size)
    f = hub.add_file("test/tiny", f"{model_id}.gguf", data, revision="v1", lfs=lfs)
    entry: dict[str, object] = {
        "id": model_id, "repo": "test/tiny", "file": f"{model_id}.gguf", "revision": "v1",
        "description": "generated test file", "size": size,
    }
    if pin:
        entry["sha256"] = f.sha256
    write_catalog(root / "models.toml", entry)
    return f


def run_cli(hub: HubServer, root: Path, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
    """`neuro ARGS` in-process: the real `main()` under click's runner isolation, env from `hub_env`."""
    from click.testing import CliRunner

    from neuro_bitnet.cli.main import main

    env: dict[str, str | None] = {"HF_TOKEN": None, "NEURO_BITNET_DEBUG": None, **hub_env(hub, root, **extra)}
    with CliRunner().isolation(env=env) as (out, err, _):
        try:
            main(list(args))
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        sys.stdout.flush()
        sys.stderr.flush()
    return subprocess.CompletedProcess(list(args), code, out.getvalue().decode(), err.getvalue().decode())
