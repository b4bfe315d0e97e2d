"""The interface every backend implements, and the statistics they share."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Generator, Protocol

from neuro_bitnet.engine.options import GenerationOptions


@dataclass
class AnswerStats:
    """What one answer cost. Seconds are wall-clock as the backend saw them."""

    load_seconds: float = 0.0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    finish_reason: str = ""
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        return asdict(self)


class Backend(Protocol):
    """A running model that answers chat messages."""

    name: str  # "native", "subprocess" or "daemon"
    model_name: str
    ctx_size: int

    def chat(self, messages: list[dict[str, str]], options: GenerationOptions) -> Generator[str, None, None]:
        """Stream the assistant's reply to ``messages`` as text pieces (close it to stop early)."""
        ...

    def count_tokens(self, text: str) -> int:
        """Token count of ``text`` (exact where the backend has the tokenizer)."""
        ...

    def cancel(self) -> None:
        """Stop the answer being generated, if any."""
        ...

    @property
    def last_stats(self) -> AnswerStats:
        """Statistics of the last completed answer."""
        ...

    def close(self) -> None:
        ...
