"""The daemon backend: answers come from a running `neuro serve` over its OpenAI-style API."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

from neuro_bitnet.backends.daemon_client import DaemonClient, is_running
from neuro_bitnet.engine.options import DEFAULT_CTX_SIZE, GenerationOptions
from neuro_bitnet.engine.stats import AnswerResult, Generation
from neuro_bitnet.errors import DaemonError


class DaemonBackend:
    """Streams chat completions from the daemon, which keeps the model loaded."""

    name = "daemon"

    def __init__(self, client: DaemonClient, model_name: str, ctx_size: int) -> None:
        self.client = client
        self.model_name = model_name
        self.ctx_size = ctx_size
        self._cancelled = False

    @classmethod
    def connect(cls, url: str, model: str | None = None, *, required: bool = False) -> "DaemonBackend | None":
        """A backend for the daemon at ``url``; None when none answers there or it serves
        another model than ``model`` (a catalog id, alias or path). With ``required``, those
        cases are errors that say which."""
        if not is_running(url):
            if required:
                raise DaemonError(f"no neuro daemon answers at {url}; start one with `neuro serve --detach`")
            return None
        client = DaemonClient(url)
        health = client.health()
        served = str(health.get("model") or "")
        if model is not None and not _same_model(model, health, client):
            if required:
                raise DaemonError(f"the daemon at {url} serves {served!r}, not {model!r}")
            return None
        return cls(client, served or "daemon", int(health.get("ctx_size") or DEFAULT_CTX_SIZE))

    def chat(self, messages: list[dict[str, str]], options: GenerationOptions) -> Generation:
        result = AnswerResult()
        return Generation(self._stream(messages, options, result), result)

    def _stream(self, messages, options: GenerationOptions, result: AnswerResult) -> Iterator[str]:
        self._cancelled = False
        start = time.perf_counter()
        first = None
        pieces = self.client.chat_stream(
            messages, max_tokens=options.max_tokens, temperature=options.temperature, top_p=options.top_p,
            top_k=options.top_k, min_p=options.min_p, repeat_penalty=options.repeat_penalty, seed=options.seed,
            stop=list(options.stop) or None, response_format=_response_format(options.json_schema), result=result,
        )
        try:
            for piece in pieces:
                if self._cancelled:
                    break
                if first is None:
                    first = time.perf_counter()
                yield piece
        finally:
            pieces.close()  # closes the HTTP stream; the daemon cancels the generation
            end = time.perf_counter()
            result.prefill_seconds = (first or end) - start
            result.decode_seconds = end - (first or end)
            result.finish_reason = result.finish_reason or ("cancelled" if self._cancelled else "")

    def count_tokens(self, text: str) -> int:
        # The daemon does not expose its tokenizer; ~3 characters a token errs on the safe side.
        return max(1, (len(text) + 2) // 3)

    def cancel(self) -> None:
        self._cancelled = True

    def close(self) -> None:
        pass


def _same_model(requested: str, health: dict, client: DaemonClient) -> bool:
    """Does the daemon serve ``requested`` (by id, by one of its aliases, or as the same file)?"""
    served_path = health.get("path")
    if served_path and Path(requested).suffix == ".gguf":
        return Path(requested).expanduser().resolve() == Path(served_path).resolve()
    names = {str(health.get("model") or "")}
    try:
        for entry in client.models():
            names.add(str(entry.get("id", "")))
            names.update(str(a) for a in entry.get("aliases", []) or [])
    except Exception:  # an older daemon without the listing: compare the id only
        pass
    if requested in names or requested == "default":
        return True
    try:
        from neuro_bitnet.models.catalog import load_catalog

        entry = load_catalog().find(requested)
        return entry is not None and (entry.id in names or bool(set(entry.aliases) & names))
    except Exception:
        return False


def _response_format(schema: dict | bool | None) -> dict | None:
    """The OpenAI ``response_format`` that asks the daemon for JSON matching ``schema``."""
    if schema is None:
        return None
    return {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}
