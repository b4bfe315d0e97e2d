"""Bad requests get 4xx with an OpenAI-style JSON error, and the server keeps serving."""

from __future__ import annotations

import httpx
import pytest

from support.daemon_proc import CTX_SIZE, MAX_BODY


@pytest.fixture
def post(daemon, auth):
    def _post(path: str, **kwargs) -> httpx.Response:
        headers = {**auth, **kwargs.pop("headers", {})}
        return httpx.post(daemon.url + path, headers=headers, timeout=120, **kwargs)
    return _post


def _error(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert isinstance(error["message"], str) and error["message"]
    assert error["type"]
    return error


CHAT = "/v1/chat/completions"
USER = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize("body, param", [
    ({"messages": USER, "max_tokens": "ten"}, "max_tokens"),
    ({"messages": USER, "max_tokens": 0}, "max_tokens"),
    ({"messages": USER, "max_tokens": 1.5}, "max_tokens"),
    ({"messages": USER, "temperature": "hot"}, "temperature"),
    ({"messages": USER, "temperature": 9}, "temperature"),
    ({"messages": USER, "top_p": 0}, "top_p"),
    ({"messages": USER, "stream": "yes"}, "stream"),
    ({"messages": USER, "stop": 5}, "stop"),
    ({"messages": USER, "seed": "x"}, "seed"),
    ({"messages": USER, "n": 2}, "n"),
    ({"messages": "hi"}, "messages"),
    ({"messages": []}, "messages"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "messages"),
    ({"messages": [{"content": "hi"}]}, "messages"),
    ({"messages": [{"role": "user", "content": 42}]}, "messages"),
    ({}, "messages"),
])
def test_wrong_types_and_values_are_400_naming_the_field(post, body, param) -> None:
    assert _error(post(CHAT, json=body), 400)["param"] == param


@pytest.mark.parametrize("path, body", [
    (CHAT, {"messages": USER, "temperature": -1}),
    (CHAT, {"messages": USER, "top_p": 2}),
    ("/v1/completions", {"prompt": "hi", "min_p": 1.0}),
    ("/api/generate", {"prompt": "hi", "stream": False, "options": {"temperature": -1}}),
    ("/api/generate", {"prompt": "hi", "stream": False, "options": {"top_p": 2}}),
    ("/api/generate", {"prompt": "hi", "stream": False, "options": {"min_p": 1}}),  # past Ollama's own check
], ids=["chat-temperature", "chat-top_p", "completion-min_p", "ollama-temperature", "ollama-top_p", "ollama-min_p"])
def test_bad_sampling_is_400_with_one_slot_or_several(slots_daemon, auth, path, body) -> None:
    """Sampling values out of range are the client's mistake in both modes of the daemon (one
    slot, or a batch of four): a 400 with a JSON error naming the value, and the server goes on."""
    name = next(k for k in ("temperature", "top_p", "min_p") if k in {**body, **body.get("options", {})})
    response = httpx.post(slots_daemon.url + path, json=body, headers=auth, timeout=120)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert name in (error if isinstance(error, str) else error["message"])
    ok = httpx.post(slots_daemon.url + CHAT, json={"messages": USER, "max_tokens": 1}, headers=auth, timeout=120)
    assert ok.status_code == 200, ok.text


# One value just out of each range, and what every dialect answers (test_mcp.py: the MCP tools).
SAMPLING_OUT_OF_RANGE = [
    ("temperature", 2.5, "temperature must be between 0 and 2, not 2.5"),
    ("top_k", -1, "top_k must be at least 0, not -1"),
    ("top_p", 0, "top_p must be more than 0 and at most 1, not 0"),
    ("min_p", 1, "min_p must be at least 0 and less than 1, not 1"),
    ("repeat_penalty", 10.5, "repeat_penalty must be more than 0 and at most 10, not 10.5"),
]


@pytest.mark.parametrize("name, value, message", SAMPLING_OUT_OF_RANGE, ids=[n for n, _, _ in SAMPLING_OUT_OF_RANGE])
def test_sampling_ranges_are_one_rule_in_every_dialect(post, name, value, message) -> None:
    """The same out-of-range value is a 400 with the same message from the OpenAI routes (their
    JSON error naming the field) and the Ollama routes (their ``{"error": ...}``)."""
    for path, body in ((CHAT, {"messages": USER}), ("/v1/completions", {"prompt": "hi"})):
        error = _error(post(path, json={**body, name: value}), 400)
        assert (error["message"], error["param"], error["code"]) == (message, name, "invalid_sampling")
    for path, body in (("/api/chat", {"messages": USER}), ("/api/generate", {"prompt": "hi"})):
        response = post(path, json={**body, "stream": False, "options": {name: value}})
        assert response.status_code == 400, response.text
        assert response.json() == {"error": message}


def test_sampling_at_the_ends_of_the_ranges_is_served(post) -> None:
    ends = {"temperature": 2, "top_k": 0, "top_p": 1, "min_p": 0, "repeat_penalty": 10}
    assert post(CHAT, json={"messages": USER, "max_tokens": 1, **ends}).status_code == 200
    assert post("/api/generate", json={"prompt": "hi", "stream": False,
                                       "options": {"num_predict": 1, **ends}}).status_code == 200


def test_malformed_and_non_object_json(post) -> None:
    assert _error(post(CHAT, content=b"{not json", headers={"content-type": "application/json"}), 400)["code"] \
        == "invalid_json"
    assert _error(post(CHAT, json=[1, 2]), 400)["code"] == "invalid_json"
    assert _error(post(CHAT, content=b"\xff\xfe", headers={"content-type": "application/json"}), 400)
    assert _error(post(CHAT, content=b"", headers={"content-type": "application/json"}), 400)


def test_unsupported_content_parts_are_rejected(post) -> None:
    parts = [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]
    assert _error(post(CHAT, json={"messages": [{"role": "user", "content": parts}]}), 400)
    text_parts = [{"type": "text", "text": "Say hi"}]
    assert post(CHAT, json={"messages": [{"role": "user", "content": text_parts}], "max_tokens": 1}).status_code == 200


def test_max_tokens_over_the_context_is_400(post) -> None:
    error = _error(post(CHAT, json={"messages": USER, "max_tokens": CTX_SIZE + 1}), 400)
    assert error["param"] == "max_tokens"


def test_prompt_over_the_context_is_400(post) -> None:
    long_text = "word " * (CTX_SIZE * 2)
    error = _error(post(CHAT, json={"messages": [{"role": "user", "content": long_text}]}), 400)
    assert error["code"] == "context_length_exceeded"
    stream = post(CHAT, json={"messages": [{"role": "user", "content": long_text}], "stream": True})
    assert _error(stream, 400)["code"] == "context_length_exceeded"
    assert _error(post("/v1/completions", json={"prompt": long_text}), 400)["code"] == "context_length_exceeded"


def test_a_prompt_must_leave_room_for_one_answer_token(post) -> None:
    """ctx_size - 1 prompt tokens are answered, ctx_size are a 400 with the engine's message: as
    token ids (checked before the model thread) and as text (checked after tokenizing), on the
    OpenAI and the Ollama routes."""
    from support.greedy import fixture_model

    tokenize = fixture_model(CTX_SIZE).tokenize
    base = len(tokenize("the"))
    texts = {n: "the" + " the" * (n - base) for n in (CTX_SIZE - 1, CTX_SIZE)}
    assert {n: len(tokenize(t)) for n, t in texts.items()} == {n: n for n in texts}
    message = (f"the prompt has {CTX_SIZE} tokens, but the model's context holds {CTX_SIZE} and the answer "
               "needs at least one: shorten the prompt or use a larger --ctx-size")

    for prompt in ([1] * (CTX_SIZE - 1), texts[CTX_SIZE - 1]):
        answer = post("/v1/completions", json={"prompt": prompt, "max_tokens": 4})
        assert answer.status_code == 200, answer.text
        assert answer.json()["usage"]["prompt_tokens"] == CTX_SIZE - 1
        assert answer.json()["usage"]["completion_tokens"] <= 1
    for prompt in ([1] * CTX_SIZE, texts[CTX_SIZE]):
        error = _error(post("/v1/completions", json={"prompt": prompt, "max_tokens": 4}), 400)
        assert (error["message"], error["code"]) == (message, "context_length_exceeded")
    ollama = post("/api/generate", json={"prompt": texts[CTX_SIZE], "stream": False, "raw": True})
    assert (ollama.status_code, ollama.json()) == (400, {"error": message})


def test_token_prompts_are_checked(post) -> None:
    assert post("/v1/completions", json={"prompt": [1, 2, 3], "max_tokens": 2}).status_code == 200
    assert _error(post("/v1/completions", json={"prompt": [10**9]}), 400)
    assert _error(post("/v1/completions", json={"prompt": ["a", "b"]}), 400)["param"] == "prompt"


def test_body_over_the_limit_is_413(post) -> None:
    big = {"messages": [{"role": "user", "content": "x" * (MAX_BODY + 10)}]}
    assert _error(post(CHAT, json=big), 413)["code"] == "request_too_large"


def test_unknown_route_and_method(daemon, auth) -> None:
    assert _error(httpx.get(daemon.url + "/v1/nothing", headers=auth), 404)["code"] == "not_found"
    assert _error(httpx.get(daemon.url + CHAT, headers=auth), 405)["code"] == "method_not_allowed"


JSON = {"content-type": "application/json"}


@pytest.mark.parametrize("path, raw", [
    (CHAT, b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": ' + b"9" * 5000 + b"}"),
    ("/v1/completions", b'{"prompt": "hi", "seed": ' + b"1" * 5000 + b"}"),
    (CHAT, b"[" * 30_000 + b"]" * 30_000),
    (CHAT, b'{"messages": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"),
    (CHAT, b'{"model": "\\ud800", "messages": [{"role": "user", "content": "hi"}]}'),
    ("/v1/completions", b'{"model": "x\\udfff", "prompt": "hi"}'),
    ("/v1/embeddings", b'{"input": ["fine", "\\ud83d alone"]}'),
    ("/v1/search", b'{"query": "\\udc00"}'),
])
# Nesting: 30,000 levels (the body limit here is 64 KB) is far past the JSON decoder's recursion limit.
def test_hostile_json_is_400_never_500(post, path, raw) -> None:
    assert _error(post(path, content=raw, headers=JSON), 400)["code"] == "invalid_json"


def test_a_valid_surrogate_pair_is_text(post) -> None:
    body = b'{"model": "default", "prompt": "\\ud83d\\ude00", "max_tokens": 1}'  # an emoji, escaped
    assert post("/v1/completions", content=body, headers=JSON).status_code == 200


def test_tool_messages_are_refused_while_tools_are_not_supported(post) -> None:
    messages = [{"role": "user", "content": "hi"}, {"role": "tool", "content": "42", "tool_call_id": "a"}]
    error = _error(post(CHAT, json={"messages": messages}), 400)
    assert error["param"] == "messages" and "tool" in error["message"]


def test_json_endpoints_require_the_json_content_type(post) -> None:
    body = b'{"prompt": "hi", "max_tokens": 1}'
    for content_type in (None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
        headers = {"content-type": content_type} if content_type else {}
        assert _error(post("/v1/completions", content=body, headers=headers), 415)["code"] == "unsupported_media_type"
    ok = post("/v1/completions", content=body, headers={"content-type": "Application/JSON; charset=utf-8"})
    assert ok.status_code == 200


def test_a_prompt_too_long_for_any_tokenization_is_refused_before_tokenizing(post, daemon, auth) -> None:
    # MAX_BODY allows it, the context (CTX_SIZE tokens of the fixture's <= 30-byte tokens) cannot.
    big = "z" * (MAX_BODY - 1000)
    error = _error(post("/v1/completions", json={"prompt": big}), 400)
    assert error["code"] == "context_length_exceeded" and "bytes" in error["message"]
    assert _error(post(CHAT, json={"messages": [{"role": "user", "content": big}]}), 400)["param"] == "messages"
    assert _error(post("/v1/completions", json={"prompt": list(range(CTX_SIZE))}), 400)["code"] \
        == "context_length_exceeded"


def _raw(daemon, data: bytes) -> bytes:
    import socket
    from urllib.parse import urlsplit

    address = urlsplit(daemon.url)
    with socket.create_connection((address.hostname, address.port), timeout=60) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


@pytest.mark.parametrize("data", [
    b"GARBAGE\r\n\r\n",
    b"GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: " + b"a" * 70_000,  # an endless head
    b"GET /health HTTP/1.1\r\nHost: localhost\r\nContent-Length: nope\r\n\r\n",
])
def test_malformed_http_gets_a_json_400(daemon, data) -> None:
    import json

    head, _, body = _raw(daemon, data).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 "), head
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body)["error"]["code"] == "invalid_http"


def test_internal_value_errors_are_not_client_errors() -> None:
    from neuro_bitnet.errors import EngineError
    from neuro_bitnet.server.app import as_api_error
    from neuro_bitnet.server.errors import APIError

    assert as_api_error(ValueError("bug")).status == 500
    assert as_api_error(EngineError("non-finite logits")).status == 500
    assert as_api_error(APIError(400, "bad")).status == 400


def test_server_still_answers_after_bad_input(post, daemon, auth) -> None:
    for _ in range(3):
        post(CHAT, content=b"]]]", headers={"content-type": "application/json"})
    assert httpx.get(daemon.url + "/health", headers=auth).json()["status"] == "ok"
    assert post(CHAT, json={"messages": USER, "max_tokens": 2}).status_code == 200
