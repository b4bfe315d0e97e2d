"""What one answer produced and cost (`AnswerResult`), and the stream that fills it (`Generation`)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator


@dataclass
class AnswerResult:
    """One answer: its text, why it ended, its token counts and timings (seconds, wall-clock as
    the producer saw them). Every engine call, batch request and backend answer has its own."""

    text: str = ""
    finish_reason: str = ""  # "stop", "length", "cancelled", "error" or "" while running
    load_seconds: float = 0.0
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens reused from the KV cache (not recomputed)
    generated_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    first_token_seconds: float | None = None  # from the call to the first text piece
    mask_seconds: float = 0.0  # part of prefill+decode spent on grammar masks (constrained decoding)
    tokens: list[int] = field(default_factory=list)  # generated token ids, where the producer knows them
    extra: dict[str, Any] = field(default_factory=dict)  # producer-specific facts (isa, threads, ...)

    @property
    def prefill_tokens_per_second(self) -> float:
        evaluated = self.prompt_tokens - self.cached_tokens
        return evaluated / self.prefill_seconds if self.prefill_seconds > 0 else 0.0

    @property
    def decode_tokens_per_second(self) -> float:
        # The first generated token comes from the prefill logits; later ones cost one decode step.
        steps = max(self.generated_tokens - 1, 0)
        return steps / self.decode_seconds if self.decode_seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = asdict(self)
        data["prefill_tokens_per_second"] = round(self.prefill_tokens_per_second, 3)
        data["decode_tokens_per_second"] = round(self.decode_tokens_per_second, 3)
        return data


class Generation:
    """A stream of text pieces whose :class:`AnswerResult` is ``result``: complete once the
    stream is exhausted or closed. ``pieces`` is the generator that produces the text and fills
    the counts and timings of ``result``; the text and time to first token are noted here."""

    def __init__(self, pieces: Iterator[str], result: AnswerResult, started: float | None = None) -> None:
        self._pieces = pieces
        self._started = time.perf_counter() if started is None else started
        self._parts: list[str] = []
        self.result = result

    def __iter__(self) -> "Generation":
        return self

    def __next__(self) -> str:
        try:
            piece = next(self._pieces)
        except StopIteration:
            self._finish()
            raise
        if piece and self.result.first_token_seconds is None:
            self.result.first_token_seconds = time.perf_counter() - self._started
        self._parts.append(piece)
        return piece

    def close(self) -> None:
        """Stop early (the producer finishes its result) or, after the end, do nothing."""
        close = getattr(self._pieces, "close", None)
        if close is not None:
            close()
        self._finish()

    def _finish(self) -> None:
        self.result.text = "".join(self._parts)

    def __enter__(self) -> "Generation":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
