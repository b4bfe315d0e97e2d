"""`neuro_bitnet.backends.daemon_client` (used by `neuro ask --backend daemon`) against the real daemon."""

from __future__ import annotations

import pytest

from neuro_bitnet.backends.daemon import DaemonBackend
from neuro_bitnet.backends.daemon_client import DaemonClient, is_running
from neuro_bitnet.engine.options import GenerationOptions
from neuro_bitnet.errors import DaemonError

from support.daemon_proc import API_KEY
from support.greedy import greedy_completion


def test_is_running(daemon) -> None:
    assert is_running(daemon.url, api_key=API_KEY)
    assert not is_running(daemon.url, api_key="wrong")  # answers, but not to us
    assert not is_running("http://127.0.0.1:9", timeout=0.5)


def test_chat_and_completion_streams_with_usage(daemon, openai_client) -> None:
    client = DaemonClient(daemon.url, api_key=API_KEY)
    messages = [{"role": "user", "content": "Say something."}]
    text = "".join(client.chat_stream(messages, max_tokens=5, temperature=0))
    whole = openai_client.chat.completions.create(model="default", messages=messages, max_tokens=5, temperature=0)
    assert text == whole.choices[0].message.content
    assert client.last_usage["completion_tokens"] == whole.usage.completion_tokens
    assert client.last_finish_reason in ("stop", "length")
    completion = "".join(client.complete_stream("Hello", max_tokens=4, temperature=0, stop=("zzz",)))
    assert completion == greedy_completion("Hello", 4, stop=["zzz"])
    assert client.last_usage["completion_tokens"] <= 4
    assert client.health()["model"] == daemon.model_id


def test_each_daemon_backend_answer_has_its_own_result(daemon, openai_client) -> None:
    backend = DaemonBackend(DaemonClient(daemon.url, api_key=API_KEY), "default", 512)
    messages = [{"role": "user", "content": "Say something."}]
    first = backend.chat(messages, GenerationOptions(max_tokens=5, temperature=0))
    first_text = "".join(first)
    second = backend.chat(messages, GenerationOptions(max_tokens=2, temperature=0))
    "".join(second)
    whole = openai_client.chat.completions.create(model="default", messages=messages, max_tokens=5, temperature=0)
    assert first.result.text == first_text == whole.choices[0].message.content
    assert first.result.generated_tokens == whole.usage.completion_tokens
    assert first.result.prompt_tokens == whole.usage.prompt_tokens
    assert first.result.finish_reason in ("stop", "length")
    assert second.result.generated_tokens <= 2 and second.result.prompt_tokens == whole.usage.prompt_tokens


def test_errors_are_daemon_errors(daemon) -> None:
    client = DaemonClient(daemon.url, api_key=API_KEY)
    with pytest.raises(DaemonError, match="model_not_found|does not exist"):
        list(client.chat_stream([{"role": "user", "content": "hi"}], model="other-model"))
    with pytest.raises(DaemonError, match="401"):
        DaemonClient(daemon.url, api_key="wrong").health()
    with pytest.raises(DaemonError, match="no neuro daemon"):
        DaemonClient("http://127.0.0.1:9").health()
