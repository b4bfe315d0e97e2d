"""The Ollama API through the official `ollama` Python client (and raw NDJSON), on the real daemon."""

from __future__ import annotations

import json

import httpx
import jsonschema
import pytest

ollama = pytest.importorskip("ollama")

from support.daemon_proc import API_KEY  # noqa: E402

AUTH = {"Authorization": f"Bearer {API_KEY}"}
MESSAGES = [{"role": "user", "content": "Name a colour."}]
SCHEMA = {"type": "object", "properties": {"colour": {"enum": ["red", "green"]}, "n": {"type": "integer", "minimum": 0,
                                                                                          "maximum": 9}},
          "required": ["colour", "n"], "additionalProperties": False}


@pytest.fixture
def client(daemon):
    return ollama.Client(host=daemon.url, headers=AUTH, timeout=120)


def _tag(daemon) -> str:
    return daemon.model_id + ":latest"


def test_listing_show_ps_and_version(client, daemon) -> None:
    models = client.list().models
    assert [m.model for m in models] == [_tag(daemon)]
    assert models[0].size > 0 and models[0].details.format == "gguf"
    running = client.ps().models
    assert [m.model for m in running] == [_tag(daemon)]
    shown = client.show(_tag(daemon))
    assert shown.details.family == "bitnet-b1.58"
    assert shown.modelinfo["general.architecture"] == "bitnet-b1.58"
    version = httpx.get(daemon.url + "/api/version", headers=AUTH, timeout=30).json()
    assert isinstance(version["version"], str)


def _check_final(reply, max_tokens: int) -> None:
    assert reply.done is True
    assert reply.done_reason in ("stop", "length")
    assert 0 < reply.eval_count <= max_tokens
    assert reply.prompt_eval_count > 0
    assert reply.total_duration >= reply.eval_duration >= 0 and reply.prompt_eval_duration > 0


def test_chat_plain_and_streamed_agree(client, daemon) -> None:
    options = {"num_predict": 8, "temperature": 0}
    whole = client.chat(model=_tag(daemon), messages=MESSAGES, options=options)
    assert whole.message.role == "assistant"
    _check_final(whole, 8)
    parts = list(client.chat(model=_tag(daemon), messages=MESSAGES, options=options, stream=True))
    assert all(not p.done for p in parts[:-1]) and parts[-1].done
    assert "".join(p.message.content for p in parts) == whole.message.content
    _check_final(parts[-1], 8)


def test_generate_plain_and_streamed_agree(client, daemon) -> None:
    options = {"num_predict": 6, "temperature": 0, "seed": 3, "top_k": 20, "top_p": 0.9, "stop": ["\n\n\n"]}
    whole = client.generate(model=daemon.model_id, prompt="Once upon a time", options=options, keep_alive="5m")
    _check_final(whole, 6)
    parts = list(client.generate(model=daemon.model_id, prompt="Once upon a time", options=options, stream=True))
    assert "".join(p.response for p in parts) == whole.response
    raw = client.generate(model=daemon.model_id, prompt="Once upon a time", raw=True, options=options)
    _check_final(raw, 6)


def test_num_predict_bounds_the_answer(client, daemon) -> None:
    reply = client.generate(model=_tag(daemon), prompt="Count", options={"num_predict": 3, "temperature": 0})
    assert reply.eval_count <= 3


def test_format_json_and_schema(client, daemon) -> None:
    for seed in (1, 2):
        reply = client.chat(model=_tag(daemon), messages=MESSAGES, format=SCHEMA,
                            options={"num_predict": 60, "temperature": 1.0, "seed": seed})
        assert reply.done_reason == "stop"
        jsonschema.validate(json.loads(reply.message.content), SCHEMA)
    reply = client.generate(model=_tag(daemon), prompt="Data:", format="json", options={"num_predict": 30})
    assert reply.response.startswith("{")
    parts = list(client.generate(model=_tag(daemon), prompt="Data:", format=SCHEMA, stream=True,
                                 options={"num_predict": 60, "temperature": 0}))
    jsonschema.validate(json.loads("".join(p.response for p in parts)), SCHEMA)


def test_raw_ndjson_stream_is_the_default(daemon) -> None:
    body = {"model": _tag(daemon), "prompt": "Hello", "options": {"num_predict": 4}, "unknown_field": 1}
    with httpx.stream("POST", daemon.url + "/api/generate", json=body, headers=AUTH, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in response.iter_lines() if line]
    assert lines[-1]["done"] is True and all(line["done"] is False for line in lines[:-1])
    assert 1 <= lines[-1]["eval_count"] <= 4 and lines[-1]["model"] == _tag(daemon)


def test_empty_prompt_loads_the_model(daemon) -> None:
    reply = httpx.post(daemon.url + "/api/generate", json={"model": _tag(daemon)}, headers=AUTH, timeout=30).json()
    assert reply["done"] is True and reply["done_reason"] == "load"


def test_embed(client, daemon) -> None:
    health = httpx.get(daemon.url + "/health", headers=AUTH, timeout=30).json()
    if not health["embeddings"]:
        with pytest.raises(ollama.ResponseError) as err:
            client.embed(model="default", input="hello")
        assert err.value.status_code == 404
        return
    reply = client.embed(model="default", input=["hello", "world"])
    assert len(reply.embeddings) == 2 and len(reply.embeddings[0]) > 0


@pytest.mark.parametrize("path, body, status, words", [
    ("/api/chat", {"model": "no-such", "messages": MESSAGES}, 404, "not found"),
    ("/api/chat", {"messages": MESSAGES, "format": {"type": "strin"}}, 400, "strin"),
    ("/api/chat", {"messages": MESSAGES, "format": "yaml"}, 400, "format"),
    ("/api/chat", {"messages": [{"role": "robot", "content": "x"}]}, 400, "role"),
    ("/api/chat", {"messages": MESSAGES, "tools": [{"type": "function"}]}, 400, "/v1/chat/completions"),
    ("/api/generate", {"prompt": "x", "options": {"temperature": "hot"}}, 400, "temperature"),
    ("/api/generate", {"prompt": "x", "options": {"top_k": 1.5}}, 400, "top_k"),  # an integer, not truncated
    ("/api/generate", {"prompt": "x", "options": {"num_predict": 0}}, 400, "num_predict"),
    ("/api/generate", {"prompt": "x", "images": ["aGk="]}, 400, "images"),
    ("/api/show", {"model": "no-such"}, 404, "not found"),
])
def test_bad_input_gets_ollama_style_errors(daemon, path, body, status, words) -> None:
    response = httpx.post(daemon.url + path, json={"stream": False, **body}, headers=AUTH, timeout=30)
    assert response.status_code == status, response.text
    assert words in response.json()["error"]


def test_client_errors_surface_in_the_client(client) -> None:
    with pytest.raises(ollama.ResponseError) as err:
        client.chat(model="no-such-model", messages=MESSAGES)
    assert err.value.status_code == 404 and "not found" in err.value.error


def test_the_api_key_guards_the_ollama_routes(daemon) -> None:
    assert httpx.get(daemon.url + "/api/tags", timeout=30).status_code == 401
