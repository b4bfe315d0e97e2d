"""The engine's own greedy answers on the fixture model, computed in the test process: what the
daemon, MCP and the CLI must return for the same request at temperature 0."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

FIXTURE_MODEL = Path(__file__).resolve().parents[1] / "fixtures" / "bitnet-b1.58" / "model.gguf"


@lru_cache(maxsize=1)
def fixture_model(ctx_size: int = 512):
    from neuro_bitnet.engine import load_model

    return load_model(FIXTURE_MODEL, threads=1, ctx_size=ctx_size)


def greedy_chat(messages: list[dict[str, str]], max_tokens: int) -> str:
    """The fixture model's reply to ``messages`` at temperature 0 (server defaults otherwise)."""
    return "".join(fixture_model().chat(messages, max_tokens=max_tokens, temperature=0))


def greedy_completion(prompt: str, max_tokens: int, stop: list[str] | None = None) -> str:
    """The continuation of ``prompt`` (tokenized with BOS) at temperature 0."""
    return "".join(fixture_model().generate(prompt, max_tokens=max_tokens, temperature=0, stop=stop))


def translated(text: str, source: str, target: str) -> str:
    """``text`` translated with the package's one translation policy on the fixture model."""
    from neuro_bitnet.language.translate import translate_with_backend
    from neuro_bitnet.server.generation import _EngineBackend

    return translate_with_backend(_EngineBackend(fixture_model()), text, source, target)


def to_english(text: str):
    from neuro_bitnet.language.translate import to_english as policy
    from neuro_bitnet.server.generation import _EngineBackend

    return policy(_EngineBackend(fixture_model()), text)
