"""`neuro mcp` through the official MCP SDK's stdio client."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

mcp = pytest.importorskip("mcp")

from daemon_proc import FIXTURE_MODEL, isolated_env  # noqa: E402
from support import greedy  # noqa: E402

pytestmark = pytest.mark.skipif(not FIXTURE_MODEL.is_file(), reason="fixture model missing")


def _params(tmp: Path, *extra: str):
    from mcp import StdioServerParameters

    args = ["-m", "neuro_bitnet.cli.main", "mcp", "--model", str(FIXTURE_MODEL), "--threads", "1",
            "--ctx-size", "512", *extra]
    return StdioServerParameters(command=sys.executable, args=args, env=isolated_env(tmp))


def _text(result) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


async def _session(tmp: Path, calls, *extra: str):
    from mcp import Client

    async with Client(_params(tmp, *extra)) as client:
        return await calls(client)


def test_tools_answer_over_stdio(tmp_path: Path) -> None:
    async def calls(client):
        names = {t.name for t in (await client.list_tools()).tools}
        generated = await client.call_tool("generate", {"prompt": "Hello", "max_tokens": 4, "temperature": 0})
        again = await client.call_tool("generate", {"prompt": "Hello", "max_tokens": 4, "temperature": 0})
        asked = await client.call_tool("ask", {"question": "What is a dog?", "max_tokens": 4})
        summary = await client.call_tool("summarize", {"text": "Dogs bark. Cats meow.", "max_words": 16})
        same = await client.call_tool("translate", {"text": "Hello world", "target_language": "en",
                                                    "source_language": "en"})
        translated = await client.call_tool("translate", {"text": "¿Dónde está la biblioteca?",
                                                          "target_language": "en"})
        bad = await client.call_tool("generate", {"prompt": "Hello", "max_tokens": 0})
        klingon = await client.call_tool("translate", {"text": "Hola", "target_language": "klingon"})
        return names, generated, again, asked, summary, same, translated, bad, klingon

    names, generated, again, asked, summary, same, translated, bad, klingon = asyncio.run(_session(tmp_path, calls))
    assert {"ask", "generate", "translate", "summarize"} <= names
    assert "search_documents" not in names  # no index configured
    for result in (generated, asked, summary, same, translated):
        assert not result.is_error, _text(result)
    assert _text(generated) == _text(again)  # greedy, so repeatable
    assert _text(same) == "Hello world"  # same language: returned untouched
    assert _text(translated) == greedy.translated("¿Dónde está la biblioteca?", "es", "en")
    assert bad.is_error and "max_tokens" in _text(bad)
    assert klingon.is_error and "unsupported language 'klingon'" in _text(klingon)


def test_search_documents_appears_with_an_index(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from index_fixture import build_index

    storage, embedder = build_index(tmp_path)

    async def calls(client):
        names = {t.name for t in (await client.list_tools()).tools}
        found = await client.call_tool("search_documents", {"query": "dog barks", "top_k": 2})
        return names, found

    names, found = asyncio.run(_session(tmp_path, calls, "--storage", str(storage), "--embedder", str(embedder)))
    assert "search_documents" in names
    assert not found.is_error, _text(found)
    assert "pets.md" in _text(found).split("\n")[0]
