"""Wall-clock timing of one answer as a person feels it: load, first token, total."""

from __future__ import annotations

import time
from typing import Iterable, Iterator

from neuro_bitnet.engine.stats import AnswerResult


class AnswerTimer:
    """Marks the moments of one `ask`: start, model ready, generation start, first token, end."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.ready = self.gen_start = self.first_token = self.end = None

    def loaded(self) -> None:
        self.ready = time.perf_counter()

    def generation_started(self) -> None:
        self.gen_start = time.perf_counter()

    def watch(self, pieces: Iterable[str]) -> Iterator[str]:
        """Pass pieces through, noting when the first one arrives."""
        for piece in pieces:
            if self.first_token is None and piece:
                self.first_token = time.perf_counter()
            yield piece

    def finished(self) -> None:
        self.end = time.perf_counter()

    def as_dict(self, stats: AnswerResult) -> dict[str, float | None]:
        def since(t0, t1):
            return round(t1 - t0, 4) if t0 is not None and t1 is not None else None

        return {
            "load_seconds": since(self.start, self.ready),
            "time_to_first_token_seconds": since(self.start, self.first_token),
            "prefill_seconds": round(stats.prefill_seconds, 4),
            "decode_seconds": round(stats.decode_seconds, 4),
            "prompt_tokens_per_second": _rate(stats.prompt_tokens, stats.prefill_seconds),
            "generated_tokens_per_second": _rate(max(stats.generated_tokens - 1, 0), stats.decode_seconds),
            "total_seconds": since(self.start, self.end),
        }


def _rate(tokens: int, seconds: float) -> float | None:
    return round(tokens / seconds, 2) if seconds > 0 else None


def format_timing(stats: AnswerResult, timer: AnswerTimer) -> str:
    """The `--timing` block, one fact per line."""
    t = timer.as_dict(stats)

    def fmt(value, unit="s"):
        return "n/a" if value is None else f"{value:.2f} {unit}"

    return "\n".join([
        "",
        f"load:          {fmt(t['load_seconds'])}",
        f"first token:   {fmt(t['time_to_first_token_seconds'])}",
        f"prompt:        {stats.prompt_tokens} tokens, {fmt(t['prompt_tokens_per_second'], 'tok/s')}",
        f"generated:     {stats.generated_tokens} tokens, {fmt(t['generated_tokens_per_second'], 'tok/s')}",
        f"total:         {fmt(t['total_seconds'])}",
    ])
