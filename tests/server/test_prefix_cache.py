"""The daemon's prefix cache across the turns of a chat, as reported in ``cached_tokens``.

The KV cache holds the last request's prompt and the answer the model generated; the next request
reuses the longest common prefix of those tokens and its own prompt. The expected counts are
computed here, in the test process, from the fixture model's tokenizer and greedy answer.
"""

from __future__ import annotations

import json

import httpx
import pytest

from neuro_bitnet.engine.model import common_prefix

from support.daemon_proc import API_KEY
from support.greedy import fixture_model

HEADERS = {"Authorization": f"Bearer {API_KEY}"}
TURN_1 = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."}]
MAX_TOKENS = 8


@pytest.fixture
def daemon(slots_daemon):
    """Every test here runs on a daemon with one slot (``--parallel 1``), then with four."""
    return slots_daemon


def _chat(daemon, messages: list[dict[str, str]], **extra) -> dict:
    body = {"model": "default", "messages": messages, "max_tokens": MAX_TOKENS, "temperature": 0, **extra}
    response = httpx.post(daemon.url + "/v1/chat/completions", json=body, headers=HEADERS, timeout=120)
    assert response.status_code == 200, response.text
    return response.json()


def _kv_after(messages: list[dict[str, str]]) -> tuple[list[int], list[int]]:
    """(prompt ids, ids in the KV cache after the greedy answer), from the engine in this process:
    a token that ends the answer by length is produced but never evaluated."""
    model = fixture_model()
    prompt = model.chat_prompt_ids(messages)
    answer = model.chat(messages, max_tokens=MAX_TOKENS, temperature=0)
    "".join(answer)
    generated = list(answer.result.tokens)
    if answer.result.finish_reason == "length":
        generated = generated[:-1]
    return prompt, prompt + generated


def test_turn_two_reuses_turn_one(daemon) -> None:
    first = _chat(daemon, TURN_1)
    answer = first["choices"][0]["message"]["content"]
    turn_2 = TURN_1 + [{"role": "assistant", "content": answer}, {"role": "user", "content": "Another one."}]
    second = _chat(daemon, turn_2)

    prompt_1, kv = _kv_after(TURN_1)
    prompt_2 = fixture_model().chat_prompt_ids(turn_2)
    assert first["usage"]["prompt_tokens"] == len(prompt_1)
    assert second["usage"]["prompt_tokens"] == len(prompt_2)
    cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached == common_prefix(kv, prompt_2)
    assert cached >= len(prompt_1)  # the generation prompt's last token (a space) is kept


def test_turn_two_prefills_only_its_new_tokens(daemon) -> None:
    """Turn 2's history holds turn 1's prompt and answer as the model evaluated them: only the
    new turn is prefilled, and the answer is the one the prompt gets evaluated from scratch."""
    turn_1 = [{"role": "user", "content": "Hi"}]  # the fixture's greedy answer is visible text
    first = _chat(daemon, turn_1)
    answer = first["choices"][0]["message"]["content"]
    assert answer.strip() == answer != ""
    turn_2 = turn_1 + [{"role": "assistant", "content": answer}, {"role": "user", "content": "Again?"}]
    second = _chat(daemon, turn_2)

    prompt_1, kv = _kv_after(turn_1)  # the engine here generated (and remembered) the same answer
    model = fixture_model()
    prompt_2 = model.chat_prompt_ids(turn_2)
    assert prompt_2[: len(kv)] == kv
    cached = second["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached == len(kv) > len(prompt_1)  # all of turn 1: its prompt and its evaluated answer
    model.reset()
    expected = "".join(model.generate(prompt_2, max_tokens=MAX_TOKENS, temperature=0))
    assert second["choices"][0]["message"]["content"] == expected


def test_a_repeated_request_reuses_all_but_its_last_token(daemon) -> None:
    _chat(daemon, TURN_1)
    again = _chat(daemon, TURN_1, stream=False)
    usage = again["usage"]
    assert usage["prompt_tokens_details"]["cached_tokens"] == usage["prompt_tokens"] - 1


def test_another_conversation_reuses_only_the_shared_start(daemon) -> None:
    _chat(daemon, TURN_1)
    other = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Count to three."}]
    reply = _chat(daemon, other)
    prompt_1, kv = _kv_after(TURN_1)
    prompt_other = fixture_model().chat_prompt_ids(other)
    cached = reply["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert cached == common_prefix(kv, prompt_other)
    assert 0 < cached < len(prompt_1)


def test_streamed_usage_reports_cached_tokens(daemon) -> None:
    _chat(daemon, TURN_1)
    body = {"model": "default", "messages": TURN_1, "max_tokens": 4, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    usage = None
    with httpx.stream("POST", daemon.url + "/v1/chat/completions", json=body, headers=HEADERS,
                      timeout=120) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: {"):
                usage = json.loads(line[len("data: "):]).get("usage") or usage
    assert usage is not None
    assert usage["prompt_tokens_details"]["cached_tokens"] == usage["prompt_tokens"] - 1
