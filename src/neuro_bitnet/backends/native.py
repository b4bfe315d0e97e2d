"""The in-process backend: the package's own BitNet engine."""

from __future__ import annotations

from pathlib import Path

from neuro_bitnet.engine.options import GenerationOptions
from neuro_bitnet.engine.stats import Generation


class NativeBackend:
    """Runs the model in this process with :mod:`neuro_bitnet.engine`."""

    name = "native"

    def __init__(self, model_path: Path, *, threads: int | None, ctx_size: int, model_name: str | None = None):
        from neuro_bitnet.engine import load_model

        self.model = load_model(model_path, threads=threads, ctx_size=ctx_size)
        self.model_name = model_name or self.model.name
        self.ctx_size = ctx_size

    def chat(self, messages: list[dict[str, str]], options: GenerationOptions) -> Generation:
        answer = self.model.chat(messages, **options.engine_kwargs())
        answer.result.extra.update(isa=self.model.isa, threads=self.model.threads)
        return answer

    def count_tokens(self, text: str) -> int:
        return len(self.model.tokenize(text, add_bos=False))

    def prompt_tokens(self, messages: list[dict[str, str]]) -> int:
        """Exact token count of the chat prompt for ``messages``."""
        return len(self.model.chat_prompt_ids(messages))

    def cancel(self) -> None:
        self.model.cancel()

    def close(self) -> None:
        self.model.close()
