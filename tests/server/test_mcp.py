"""`neuro mcp` through the official MCP SDK's stdio client."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

mcp = pytest.importorskip("mcp")

from support import greedy  # noqa: E402
from support.daemon_proc import FIXTURE_MODEL, isolated_env  # noqa: E402

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


@pytest.mark.slow
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


def test_temperature_out_of_range_is_the_http_dialects_message(tmp_path: Path) -> None:
    """The tools refuse a temperature the HTTP routes refuse, with their message
    (test_bad_input.py's SAMPLING_OUT_OF_RANGE), and 2, the top of the range, is served."""
    async def calls(client):
        refused = [await client.call_tool("generate", {"prompt": "Hello", "max_tokens": 2, "temperature": 2.5}),
                   await client.call_tool("ask", {"question": "Hi", "max_tokens": 2, "temperature": 2.5})]
        return refused, await client.call_tool("generate", {"prompt": "Hello", "max_tokens": 2, "temperature": 2})

    refused, served = asyncio.run(_session(tmp_path, calls))
    for tool, result in zip(("generate", "ask"), refused):
        assert result.is_error, _text(result)
        assert _text(result) == f"Error executing tool {tool}: temperature must be between 0 and 2, not 2.5"
    assert not served.is_error, _text(served)


@pytest.mark.slow
def test_search_documents_appears_with_an_index(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from support.index_fixture import build_index

    storage, embedder = build_index(tmp_path)

    async def calls(client):
        names = {t.name for t in (await client.list_tools()).tools}
        found = await client.call_tool("search_documents", {"query": "dog barks", "top_k": 2})
        return names, found

    names, found = asyncio.run(_session(tmp_path, calls, "--storage", str(storage), "--embedder", str(embedder)))
    assert "search_documents" in names
    assert not found.is_error, _text(found)
    assert "pets.md" in _text(found).split("\n")[0]


@pytest.mark.slow
def test_a_bad_model_file_is_a_one_line_tool_error(tmp_path: Path) -> None:
    """The tool result carries the CLI's message; stderr has no traceback."""
    import subprocess

    from mcp import Client, StdioServerParameters

    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"NOPE" + bytes(4092))
    stderr = tmp_path / "stderr.txt"
    env = isolated_env(tmp_path)
    cli = subprocess.run([sys.executable, "-m", "neuro_bitnet.cli.main", "ask", "--model", str(fake), "hi"],
                         capture_output=True, text=True, env=env, timeout=120)
    message = cli.stderr.strip().removeprefix("error: ")
    assert cli.returncode == 5 and "not a GGUF file" in message

    args = ["-c", 'exec "$0" "$@" 2>"$NEURO_TEST_STDERR"', sys.executable, "-m", "neuro_bitnet.cli.main", "mcp",
            "--model", str(fake), "--threads", "1"]
    params = StdioServerParameters(command="sh", args=args, env={**env, "NEURO_TEST_STDERR": str(stderr)})

    async def calls():
        async with Client(params) as client:
            first = await client.call_tool("generate", {"prompt": "Hello", "max_tokens": 4})
            second = await client.call_tool("ask", {"question": "Hi", "max_tokens": 4})
            return first, second

    for result in asyncio.run(calls()):
        assert result.is_error
        assert message in _text(result), _text(result)
    assert "Traceback" not in stderr.read_text()


class _RawMCP:
    """``neuro mcp`` driven line by line (what an SDK client cannot send: broken JSON)."""

    def __init__(self, tmp: Path) -> None:
        import queue
        import subprocess
        import threading

        args = ["-m", "neuro_bitnet.cli.main", "mcp", "--model", str(FIXTURE_MODEL), "--threads", "1",
                "--ctx-size", "512"]
        self.proc = subprocess.Popen([sys.executable, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, env=isolated_env(tmp))
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(line) for line in self.proc.stdout], daemon=True).start()

    def send(self, raw: bytes) -> None:
        self.proc.stdin.write(raw + b"\n")
        self.proc.stdin.flush()

    def reply(self) -> dict:
        import json

        return json.loads(self.lines.get(timeout=120))

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(60)


@pytest.mark.slow
def test_every_request_line_gets_a_reply(tmp_path: Path) -> None:
    import json

    raw = _RawMCP(tmp_path)
    try:
        raw.send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"}}}).encode())
        assert raw.reply()["id"] == 1
        raw.send(b'{"jsonrpc": "2.0", "method": "notifications/initialized"}')

        raw.send(b"{not json")
        parse_error = raw.reply()
        assert parse_error["id"] is None and parse_error["error"]["code"] == -32700

        raw.send(b'{"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "generate", '
                 b'"arguments": {"prompt": "\\ud800 hello", "max_tokens": 2}}}')
        surrogate = raw.reply()
        assert surrogate["id"] == 2 and surrogate["result"]["isError"] is True
        assert "surrogate" in surrogate["result"]["content"][0]["text"]

        raw.send(b'{"jsonrpc": "2.0", "id": 3, "method": "tools/list", "params": {"cursor": "\\udc00"}}')
        assert raw.reply()["error"]["code"] == -32602

        raw.send(b'{"id": 4, "method": 7}')
        assert raw.reply()["error"]["code"] == -32600

        raw.send(json.dumps({"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": {
            "name": "generate", "arguments": {"prompt": "Hello", "max_tokens": 2}}}).encode())
        fine = raw.reply()
        assert fine["id"] == 5 and fine["result"]["isError"] is False  # the server still serves
    finally:
        raw.close()


def test_ask_fits_long_passages_into_the_context() -> None:
    from neuro_bitnet.answering import grounded_messages as shared_grounded_messages
    from neuro_bitnet.engine import load_model
    from neuro_bitnet.server.generation import token_counter

    def grounded_messages(model, question, hits, budget):  # the MCP ask's call, with a given budget
        return shared_grounded_messages(question, hits, token_counter(model), ctx_size=model.ctx_size,
                                        max_tokens=0, budget=budget)[0]

    model = load_model(FIXTURE_MODEL, threads=1, ctx_size=512)
    long_text = " ".join(f"sentence {i} about dogs and cats." for i in range(400))
    hits = [{"path": f"doc{i}.md", "location": "lines 1-9", "text": long_text} for i in range(8)]
    budget = 200
    messages = grounded_messages(model, "What about dogs?", hits, budget)
    user = messages[-1]["content"]
    assert "[1] doc0.md (lines 1-9)" in user and "Question: What about dogs?" in user
    block = user.split("Sources:\n", 1)[1].rsplit("\n\nQuestion:", 1)[0]
    assert len(model.tokenize(block, add_bos=False)) <= budget
    assert len(model.tokenize(user, add_bos=False)) < model.ctx_size
    assert grounded_messages(model, "Q?", hits, 0)[-1]["content"] == "Q?"  # no room: no passages


@pytest.mark.slow
def test_concurrent_tool_calls_share_the_batch_and_answer_as_alone(tmp_path: Path) -> None:
    """The MCP server runs on the daemon's batching worker: calls sent at once (2 slots here, so
    some wait) get the greedy answers each gets alone."""
    prompts = ["Hello", "Once upon a time", "abc def ghi", "The list:", "x y z"]

    async def calls(client):
        def generate(prompt: str):
            return client.call_tool("generate", {"prompt": prompt, "max_tokens": 12, "temperature": 0})

        alone = [await generate(p) for p in prompts]
        together = await asyncio.gather(*(generate(p) for p in prompts))
        return alone, together

    alone, together = asyncio.run(_session(tmp_path, calls, "--parallel", "2"))
    assert not any(r.is_error for r in alone + list(together))
    assert [_text(r) for r in together] == [_text(r) for r in alone]
