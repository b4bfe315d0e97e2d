"""The interface every backend implements."""

from __future__ import annotations

from typing import Protocol

from neuro_bitnet.engine.options import GenerationOptions
from neuro_bitnet.engine.stats import Generation


class Backend(Protocol):
    """A running model that answers chat messages."""

    name: str  # "native", "subprocess" or "daemon"
    model_name: str
    ctx_size: int

    def chat(self, messages: list[dict[str, str]], options: GenerationOptions) -> Generation:
        """Stream the assistant's reply to ``messages`` as text pieces (close it to stop early);
        its ``result`` holds the answer's counts and timings once the stream ends."""
        ...

    def count_tokens(self, text: str) -> int:
        """Token count of ``text`` (exact where the backend has the tokenizer)."""
        ...

    def cancel(self) -> None:
        """Stop the answer being generated, if any."""
        ...

    def close(self) -> None:
        ...
