"""Bad requests get 4xx with an OpenAI-style JSON error, and the server keeps serving."""

from __future__ import annotations

import httpx
import pytest

from conftest import CTX_SIZE, MAX_BODY


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


def test_malformed_and_non_object_json(post) -> None:
    assert _error(post(CHAT, content=b"{not json", headers={"content-type": "application/json"}), 400)["code"] \
        == "invalid_json"
    assert _error(post(CHAT, json=[1, 2]), 400)["code"] == "invalid_json"
    assert _error(post(CHAT, content=b"\xff\xfe", headers={"content-type": "application/json"}), 400)
    assert _error(post(CHAT, content=b""), 400)


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


def test_server_still_answers_after_bad_input(post, daemon, auth) -> None:
    for _ in range(3):
        post(CHAT, content=b"]]]", headers={"content-type": "application/json"})
    assert httpx.get(daemon.url + "/health", headers=auth).json()["status"] == "ok"
    assert post(CHAT, json={"messages": USER, "max_tokens": 2}).status_code == 200
