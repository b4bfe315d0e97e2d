"""The long-running users of an index on PostgreSQL: `neuro serve --storage URL`, `neuro mcp
--storage URL` and `neuro ask --storage URL`, as real processes against the test server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from support.daemon_proc import FIXTURE_MODEL, DaemonProcess, isolated_env
from support.index_fixture import build_index

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not FIXTURE_MODEL.is_file(), reason="fixture model missing")]


@pytest.fixture
def pg_index(tmp_path: Path, pg_server) -> tuple[str, Path]:
    url, embedder = build_index(tmp_path, pg_server.new_database())
    return str(url), embedder


def test_serve_searches_a_postgres_index(tmp_path: Path, pg_index) -> None:
    url, embedder = pg_index
    daemon = DaemonProcess(["--storage", url, "--embedder", str(embedder)], tmp_path).wait_ready()
    try:
        response = httpx.post(daemon.url + "/v1/search", json={"query": "dog barks", "top_k": 2}, timeout=60)
        assert response.status_code == 200, response.text
        assert response.json()["data"][0]["path"].endswith("pets.md")
    finally:
        assert daemon.stop() == 0, daemon.output()


def test_serve_refuses_an_empty_database_before_loading(tmp_path: Path, pg_server) -> None:
    url = pg_server.new_database()
    result = subprocess.run([sys.executable, "-m", "neuro_bitnet.cli.serve_cmd", "--model", str(FIXTURE_MODEL),
                             "--port", "0", "--storage", url], capture_output=True, text=True, timeout=120,
                            env=isolated_env(tmp_path))
    assert result.returncode == 6 and "no index in postgresql://" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_mcp_search_documents_on_postgres(tmp_path: Path, pg_index) -> None:
    pytest.importorskip("mcp")
    from mcp import Client, StdioServerParameters

    url, embedder = pg_index
    args = ["-m", "neuro_bitnet.cli.main", "mcp", "--model", str(FIXTURE_MODEL), "--threads", "1",
            "--ctx-size", "512", "--storage", url, "--embedder", str(embedder)]

    async def session():
        params = StdioServerParameters(command=sys.executable, args=args, env=isolated_env(tmp_path))
        async with Client(params) as client:
            return await client.call_tool("search_documents", {"query": "dog barks", "top_k": 2})

    found = asyncio.run(session())
    text = "".join(getattr(block, "text", "") for block in found.content)
    assert not found.is_error, text
    assert "pets.md" in text.split("\n")[0]


def test_ask_cites_a_postgres_index(tmp_path: Path, pg_index) -> None:
    url, _ = pg_index
    result = subprocess.run([sys.executable, "-m", "neuro_bitnet.cli.main", "ask", "Why does the dog bark?",
                             "--model", str(FIXTURE_MODEL), "--storage", url, "--max-tokens", "4", "--temperature",
                             "0", "--json"], capture_output=True, text=True, timeout=180, env=isolated_env(tmp_path),
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    sources = json.loads(result.stdout)["sources"]
    assert sources and sources[0]["n"] == 1 and any(s["path"].endswith("pets.md") for s in sources)
