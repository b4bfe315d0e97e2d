"""The daemon through the official `openai` client: chat and text completions, streamed and not."""

from __future__ import annotations

import json

import httpx
import pytest

openai = pytest.importorskip("openai")

from support.daemon_proc import API_KEY, CTX_SIZE  # noqa: E402
from support.greedy import greedy_chat, to_english, translated  # noqa: E402

MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Name a colour."}]


def _chat(client, **kwargs):
    kwargs.setdefault("model", "default")
    kwargs.setdefault("messages", MESSAGES)
    return client.chat.completions.create(**kwargs)


def test_models_lists_the_served_model(openai_client, daemon) -> None:
    models = openai_client.models.list().data
    assert [m.id for m in models] == [daemon.model_id]
    assert openai_client.models.retrieve(daemon.model_id).id == daemon.model_id


def test_chat_completion_has_text_usage_and_finish_reason(openai_client, daemon) -> None:
    reply = _chat(openai_client, model=daemon.model_id, max_tokens=6, temperature=0)
    choice = reply.choices[0]
    assert reply.object == "chat.completion"
    assert reply.model == daemon.model_id
    assert choice.message.role == "assistant"
    assert choice.message.content == greedy_chat(MESSAGES, 6)  # the engine's own greedy answer
    assert choice.finish_reason in ("stop", "length")
    usage = reply.usage
    assert 0 < usage.completion_tokens <= 6
    assert usage.prompt_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_timings_come_with_usage_streamed_and_not(daemon, auth) -> None:
    body = {"messages": MESSAGES, "max_tokens": 6, "temperature": 0}
    whole = httpx.post(daemon.url + "/v1/chat/completions", headers=auth, json=body, timeout=120).json()
    timings = whole["timings"]
    assert timings["predicted_n"] == whole["usage"]["completion_tokens"]
    usage = whole["usage"]
    assert timings["prompt_n"] == usage["prompt_tokens"] - usage["prompt_tokens_details"]["cached_tokens"]
    assert timings["prompt_ms"] >= 0 and timings["predicted_ms"] >= 0
    if timings["predicted_n"] > 1 and timings["predicted_ms"] > 0:
        assert timings["predicted_per_second"] > 0
    events = []
    with httpx.stream("POST", daemon.url + "/v1/chat/completions", headers=auth, timeout=120,
                      json={**body, "stream": True, "stream_options": {"include_usage": True}}) as response:
        for line in response.iter_lines():
            if line.startswith("data: {"):
                events.append(json.loads(line[6:]))
    assert [e for e in events if "timings" in e] == [events[-1]]  # only the usage chunk carries them
    assert events[-1]["timings"]["predicted_n"] == events[-1]["usage"]["completion_tokens"]


def test_streamed_chat_equals_the_whole_answer(openai_client) -> None:
    whole = _chat(openai_client, max_tokens=8, temperature=0).choices[0].message.content
    stream = _chat(openai_client, max_tokens=8, temperature=0, stream=True, stream_options={"include_usage": True})
    pieces, finish, usage = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            finish = choice.finish_reason or finish
    assert "".join(pieces) == whole
    assert finish in ("stop", "length")
    assert usage is not None and usage.completion_tokens <= 8


def test_text_completion_streamed_and_not(openai_client) -> None:
    whole = openai_client.completions.create(model="default", prompt="Once upon a time", max_tokens=7, temperature=0)
    assert whole.object == "text_completion"
    assert whole.usage.completion_tokens <= 7
    streamed = openai_client.completions.create(model="default", prompt="Once upon a time", max_tokens=7,
                                                temperature=0, stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == whole.choices[0].text


def test_generate_alias_is_the_completions_endpoint(daemon, auth) -> None:
    body = {"prompt": "Once upon a time", "max_tokens": 5, "temperature": 0}
    a = httpx.post(daemon.url + "/v1/generate", json=body, headers=auth, timeout=120).json()
    b = httpx.post(daemon.url + "/v1/completions", json=body, headers=auth, timeout=120).json()
    assert a["choices"][0]["text"] == b["choices"][0]["text"]


def test_seed_makes_sampling_reproducible(openai_client) -> None:
    runs = [_chat(openai_client, max_tokens=10, temperature=1.5, top_p=1.0, seed=1234).choices[0].message.content
            for _ in range(2)]
    assert runs[0] == runs[1]


def test_stop_sequence_ends_the_answer_before_it(openai_client) -> None:
    for prompt in ("Hello", "abc def ghi", "Once upon a time", "The list:"):
        text = openai_client.completions.create(model="default", prompt=prompt, max_tokens=16,
                                                temperature=0).choices[0].text
        if len(text) >= 4:
            break
    else:
        pytest.skip("the fixture model produced too little text to cut")
    stop = text[len(text) // 2:]
    cut = openai_client.completions.create(model="default", prompt=prompt, max_tokens=16, temperature=0,
                                           stop=[stop, "never-in-output"])
    assert cut.choices[0].finish_reason == "stop"
    assert cut.choices[0].text == text[: text.index(stop)]


def test_max_tokens_bounds_the_answer(openai_client) -> None:
    reply = _chat(openai_client, max_tokens=3, temperature=0)
    assert reply.usage.completion_tokens <= 3
    if reply.usage.completion_tokens == 3:
        assert reply.choices[0].finish_reason == "length"


def test_shared_system_prompt_is_reused_from_the_kv_cache(openai_client) -> None:
    system = {"role": "system", "content": "You are a careful assistant. " * 12}
    first = _chat(openai_client, messages=[system, {"role": "user", "content": "First question?"}], max_tokens=2)
    second = _chat(openai_client, messages=[system, {"role": "user", "content": "Another one?"}], max_tokens=2)
    cached = second.usage.prompt_tokens_details.cached_tokens
    assert cached >= 40  # the system prompt's tokens were not recomputed
    assert cached < second.usage.prompt_tokens
    assert first.usage.prompt_tokens > 40


def test_model_names_default_alias_and_unknown(openai_client, daemon) -> None:
    for name in ("default", daemon.model_id, "model.gguf"):
        assert _chat(openai_client, model=name, max_tokens=1).model == daemon.model_id
    with pytest.raises(openai.NotFoundError) as err:
        _chat(openai_client, model="gpt-4o", max_tokens=1)
    assert err.value.code == "model_not_found"


def test_api_key_is_required(daemon) -> None:
    wrong = openai.OpenAI(base_url=daemon.url + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    for method, path in (("GET", "/health"), ("GET", "/v1/models"), ("POST", "/v1/chat/completions")):
        response = httpx.request(method, daemon.url + path, json={}, timeout=30)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "invalid_api_key"


def test_health_reports_model_uptime_and_translation(daemon, auth) -> None:
    health = httpx.get(daemon.url + "/health", headers=auth, timeout=30).json()
    assert health["status"] == "ok"
    assert health["model"] == daemon.model_id
    assert health["uptime"] >= 0
    assert health["auto_translate"] is False
    assert health["ctx_size"] == CTX_SIZE
    assert API_KEY not in str(health)


def test_per_request_translation_answers_in_one_piece(openai_client) -> None:
    pytest.importorskip("py3langid")
    question = [{"role": "user", "content": "¿Cuál es la capital de Francia y por qué es famosa?"}]
    whole = _chat(openai_client, messages=question, max_tokens=6, temperature=0, extra_body={"translate": True})
    english = to_english(question[0]["content"])
    assert english.translated and english.detection.language == "es"
    answer = greedy_chat([{"role": "user", "content": english.text}], 6)
    assert whole.choices[0].message.content == translated(answer, "en", "es")  # question and answer translated
    stream = _chat(openai_client, messages=question, max_tokens=6, temperature=0, stream=True,
                   extra_body={"translate": True})
    pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta.content]
    assert len(pieces) <= 1  # translated back as a whole, not token by token
    assert "".join(pieces) == whole.choices[0].message.content
