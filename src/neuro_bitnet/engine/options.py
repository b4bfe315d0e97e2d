"""What one answer asks for: sampling settings, length and stop strings (shared by every backend)."""

from __future__ import annotations

from dataclasses import dataclass

from neuro_bitnet.engine.sampling import SamplingParams


@dataclass(frozen=True)
class GenerationOptions(SamplingParams):
    """Sampling settings (validated as the engine's) plus the answer's length and stop strings."""

    max_tokens: int = 512
    stop: tuple[str, ...] = ()

    def engine_kwargs(self) -> dict:
        """Keyword arguments for the native engine's generate/chat."""
        return {
            "max_tokens": self.max_tokens, "temperature": self.temperature, "top_k": self.top_k,
            "top_p": self.top_p, "min_p": self.min_p, "repeat_penalty": self.repeat_penalty,
            "seed": self.seed, "stop": list(self.stop),
        }
