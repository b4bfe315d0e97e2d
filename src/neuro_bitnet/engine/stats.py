"""Timing statistics of the last engine call, for `--timing` and benchmarks."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class GenerationStats:
    """What the last `logits`/`generate`/`chat` call did and how long it took."""

    load_seconds: float = 0.0
    prompt_tokens: int = 0
    cached_tokens: int = 0  # prompt tokens reused from the KV cache (not recomputed)
    generated_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    mask_seconds: float = 0.0  # part of prefill+decode spent on grammar masks (constrained decoding)
    finish_reason: str = ""  # "stop", "length", "cancelled" or "" while running

    @property
    def prefill_tokens_per_second(self) -> float:
        evaluated = self.prompt_tokens - self.cached_tokens
        return evaluated / self.prefill_seconds if self.prefill_seconds > 0 else 0.0

    @property
    def decode_tokens_per_second(self) -> float:
        # The first generated token comes from the prefill logits; later ones cost one decode step.
        steps = max(self.generated_tokens - 1, 0)
        return steps / self.decode_seconds if self.decode_seconds > 0 else 0.0

    def as_dict(self) -> dict[str, float | int | str]:
        data: dict[str, float | int | str] = asdict(self)
        data["prefill_tokens_per_second"] = round(self.prefill_tokens_per_second, 3)
        data["decode_tokens_per_second"] = round(self.decode_tokens_per_second, 3)
        return data
