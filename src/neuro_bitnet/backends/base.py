"""The interface every backend implements, and the options and statistics they share."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Generator, Protocol


@dataclass(frozen=True)
class GenerationOptions:
    """Sampling and length settings for one answer."""

    max_tokens: int = 512
    temperature: float = 0.7
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    seed: int | None = None
    stop: tuple[str, ...] = ()

    def engine_kwargs(self) -> dict:
        """Keyword arguments for the native engine's generate/chat."""
        data = asdict(self)
        data["stop"] = list(self.stop)
        return data


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
