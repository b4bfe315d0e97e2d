"""A small client for a running neuro daemon (used by ``neuro ask --backend daemon``).

>>> client = DaemonClient("http://127.0.0.1:11435")
>>> for piece in client.chat_stream([{"role": "user", "content": "Hi"}], max_tokens=32):
...     print(piece, end="")
>>> client.last_usage   # {"prompt_tokens": ..., "completion_tokens": ..., ...}
"""

from __future__ import annotations

import json
from typing import Any, Iterator, Sequence

import httpx

from neuro_bitnet.config import ENV_VARS, env_api_key, env_url
from neuro_bitnet.engine.stats import AnswerResult
from neuro_bitnet.errors import DaemonError

API_KEY_ENV = ENV_VARS["daemon_api_key"]


def bearer_headers(api_key: str | None) -> dict[str, str]:
    """The ``Authorization`` header for ``api_key`` (default: ``NEURO_DAEMON_API_KEY``), if any."""
    key = api_key if api_key is not None else env_api_key()
    return {"Authorization": f"Bearer {key}"} if key else {}


def is_running(url: str | None = None, *, api_key: str | None = None, timeout: float = 1.0) -> bool:
    """True if a neuro daemon answers ``GET /health`` at ``url`` (default: the environment's)."""
    try:
        response = httpx.get(f"{(url or env_url()).rstrip('/')}/health", headers=bearer_headers(api_key),
                             timeout=timeout)
    except httpx.HTTPError:
        return False
    if response.status_code != 200:
        return False
    try:
        return response.json().get("status") == "ok"
    except ValueError:
        return False


class DaemonClient:
    """Talks to one daemon; after each stream, ``last_usage`` and ``last_finish_reason`` are set."""

    def __init__(self, url: str | None = None, *, api_key: str | None = None, timeout: float = 600.0) -> None:
        self.url = (url or env_url()).rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.last_usage: dict[str, Any] = {}
        self.last_finish_reason: str | None = None

    def health(self) -> dict[str, Any]:
        """The daemon's ``/health`` document."""
        return self._get("/health")

    def models(self) -> list[dict[str, Any]]:
        return self._get("/v1/models")["data"]

    def chat_stream(self, messages: Sequence[dict[str, str]], *, result: AnswerResult | None = None,
                    **options: Any) -> Iterator[str]:
        """Stream the assistant's reply to ``messages``; ``result``, if given, receives this
        answer's token counts and finish reason (``last_usage`` is the same for the last stream).

        Options: model, max_tokens, temperature, top_p, top_k, min_p, repeat_penalty, seed,
        stop, translate, response_format (None entries are left out).
        """
        body = {"messages": list(messages), **_options(options)}
        return self._stream("/v1/chat/completions", body, lambda choice: choice.get("delta", {}).get("content"),
                            result)

    def complete_stream(self, prompt: str, **options: Any) -> Iterator[str]:
        """Stream the continuation of a raw ``prompt`` (same options as :meth:`chat_stream`)."""
        body = {"prompt": prompt, **_options(options)}
        return self._stream("/v1/completions", body, lambda choice: choice.get("text"))

    # -- plumbing ------------------------------------------------------------------------------
    def _get(self, path: str) -> dict[str, Any]:
        try:
            response = httpx.get(self.url + path, headers=bearer_headers(self.api_key), timeout=10.0)
        except httpx.HTTPError as exc:
            raise DaemonError(f"no neuro daemon answers at {self.url} ({exc})") from None
        _raise_for_error(response)
        return response.json()

    def _stream(self, path: str, body: dict[str, Any], text_of: Any,
                result: AnswerResult | None = None) -> Iterator[str]:
        body = {**body, "stream": True, "stream_options": {"include_usage": True}}
        self.last_usage, self.last_finish_reason = {}, None
        try:
            with httpx.stream("POST", self.url + path, json=body, headers=bearer_headers(self.api_key),
                              timeout=httpx.Timeout(self.timeout, connect=5.0)) as response:
                if response.status_code != 200:
                    response.read()
                    _raise_for_error(response)
                for line in response.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        return
                    event = json.loads(data)
                    if "error" in event:
                        raise DaemonError(f"the daemon failed: {event['error'].get('message')}")
                    if event.get("usage"):
                        self.last_usage = event["usage"]
                        if result is not None:
                            _fill_usage(result, event["usage"])
                    for choice in event.get("choices", []):
                        if choice.get("finish_reason"):
                            self.last_finish_reason = choice["finish_reason"]
                            if result is not None:
                                result.finish_reason = choice["finish_reason"]
                        text = text_of(choice)
                        if text:
                            yield text
        except httpx.HTTPError as exc:
            raise DaemonError(f"lost the connection to the daemon at {self.url} ({exc})") from None


def _fill_usage(result: AnswerResult, usage: dict[str, Any]) -> None:
    """An OpenAI ``usage`` object's counts, into ``result``."""
    result.prompt_tokens = int(usage.get("prompt_tokens", 0))
    result.generated_tokens = int(usage.get("completion_tokens", 0))
    result.cached_tokens = int((usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0))


def chat_stream(messages: Sequence[dict[str, str]], *, url: str | None = None, api_key: str | None = None,
                **options: Any) -> Iterator[str]:
    """One-shot :meth:`DaemonClient.chat_stream`."""
    return DaemonClient(url, api_key=api_key).chat_stream(messages, **options)


def complete_stream(prompt: str, *, url: str | None = None, api_key: str | None = None,
                    **options: Any) -> Iterator[str]:
    """One-shot :meth:`DaemonClient.complete_stream`."""
    return DaemonClient(url, api_key=api_key).complete_stream(prompt, **options)


def _options(options: dict[str, Any]) -> dict[str, Any]:
    allowed = {"model", "max_tokens", "temperature", "top_p", "top_k", "min_p", "repeat_penalty", "seed",
               "stop", "translate", "response_format"}
    unknown = set(options) - allowed
    if unknown:
        raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
    out = {k: v for k, v in options.items() if v is not None}
    if isinstance(out.get("stop"), tuple):
        out["stop"] = list(out["stop"])
    return out


def _raise_for_error(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        message = response.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        message = response.text[:200] or response.reason_phrase
    if response.status_code == 401:
        message += f" (set {API_KEY_ENV})"
    raise DaemonError(f"the daemon answered {response.status_code}: {message}")
