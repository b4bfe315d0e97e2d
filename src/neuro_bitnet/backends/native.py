"""The in-process backend: the package's own BitNet engine."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from neuro_bitnet.backends.base import AnswerStats
from neuro_bitnet.engine.options import GenerationOptions


class NativeBackend:
    """Runs the model in this process with :mod:`neuro_bitnet.engine`."""

    name = "native"

    def __init__(self, model_path: Path, *, threads: int | None, ctx_size: int, model_name: str | None = None):
        from neuro_bitnet.engine import load_model

        self.model = load_model(model_path, threads=threads, ctx_size=ctx_size)
        self.model_name = model_name or self.model.name
        self.ctx_size = ctx_size

    def chat(self, messages: list[dict[str, str]], options: GenerationOptions) -> Iterator[str]:
        return self.model.chat(messages, **options.engine_kwargs())

    def count_tokens(self, text: str) -> int:
        return len(self.model.tokenize(text, add_bos=False))

    def prompt_tokens(self, messages: list[dict[str, str]]) -> int:
        """Exact token count of the chat prompt for ``messages``."""
        return len(self.model.chat_prompt_ids(messages))

    def cancel(self) -> None:
        self.model.cancel()

    @property
    def last_stats(self) -> AnswerStats:
        s = self.model.last_stats
        return AnswerStats(
            load_seconds=s.load_seconds,
            prompt_tokens=s.prompt_tokens,
            generated_tokens=s.generated_tokens,
            prefill_seconds=s.prefill_seconds,
            decode_seconds=s.decode_seconds,
            finish_reason=s.finish_reason,
            extra={"cached_tokens": s.cached_tokens, "isa": self.model.isa, "threads": self.model.threads},
        )

    def close(self) -> None:
        self.model.close()
