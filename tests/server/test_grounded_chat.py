"""A chat grounded on the daemon's `--storage` index (`"neuro": {"grounded": true}`): the same prompt
and citation format as `neuro ask --storage` and the MCP `ask` tool, built by the same code."""

from __future__ import annotations

import httpx
import pytest

from support.daemon_proc import CTX_SIZE, FIXTURE_MODEL

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

QUESTION = "Which animal barks?"


def _chat(daemon, auth, **extra) -> httpx.Response:
    body = {"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 2, "temperature": 0, **extra}
    return httpx.post(daemon.url + "/v1/chat/completions", headers=auth, json=body, timeout=120)


def test_grounded_chat_builds_the_ask_prompt_and_returns_its_sources(daemon, auth) -> None:
    from neuro_bitnet.answering import grounded_messages
    from neuro_bitnet.engine import load_model

    grounded = _chat(daemon, auth, neuro={"grounded": True})
    assert grounded.status_code == 200, grounded.text
    sources = grounded.json()["neuro"]["sources"]
    assert sources[0]["n"] == 1 and sources[0]["path"].endswith("pets.md") and "barks" in sources[0]["text"]

    # The prompt the daemon ran is the one `neuro ask` and MCP build from these passages.
    hits = httpx.post(daemon.url + "/v1/search", headers=auth, json={"query": QUESTION, "top_k": 8}).json()["data"]
    model = load_model(FIXTURE_MODEL, threads=1, ctx_size=CTX_SIZE)
    try:
        messages, context = grounded_messages(QUESTION, hits, lambda text: len(model.tokenize(text, add_bos=False)),
                                              ctx_size=CTX_SIZE, max_tokens=2)
        assert context.sources == sources
        assert "[1] " in messages[-1]["content"] and messages[-1]["content"].endswith(f"Question: {QUESTION}")
        assert grounded.json()["usage"]["prompt_tokens"] == len(model.chat_prompt_ids(messages))
    finally:
        model.close()
    plain = _chat(daemon, auth)
    assert "neuro" not in plain.json()
    assert plain.json()["usage"]["prompt_tokens"] < grounded.json()["usage"]["prompt_tokens"]


def test_grounded_stream_ends_with_the_sources(daemon, auth) -> None:
    with httpx.stream("POST", daemon.url + "/v1/chat/completions", headers=auth, timeout=120,
                      json={"messages": [{"role": "user", "content": QUESTION}], "max_tokens": 2, "stream": True,
                            "neuro": {"grounded": True}}) as response:
        assert response.status_code == 200
        events = [line[5:].strip() for line in response.iter_lines() if line.startswith("data:")]
    import json

    finals = [json.loads(e) for e in events[:-1] if json.loads(e)["choices"][0]["finish_reason"]]
    assert finals[0]["neuro"]["sources"][0]["path"].endswith("pets.md")


def test_unknown_neuro_fields_are_refused(daemon, auth) -> None:
    response = _chat(daemon, auth, neuro={"grounded": True, "top_k": 3})
    assert response.status_code == 400 and "neuro" in response.json()["error"]["message"]


def test_grounding_without_an_index_is_a_400(tmp_path) -> None:
    from support.daemon_proc import DaemonProcess

    proc = DaemonProcess([], tmp_path).wait_ready()
    try:
        response = httpx.post(proc.url + "/v1/chat/completions", timeout=120,
                              json={"messages": [{"role": "user", "content": "hi"}], "neuro": {"grounded": True}})
        assert response.status_code == 400
        assert "--storage" in response.json()["error"]["message"]
    finally:
        assert proc.stop() == 0, proc.output()
