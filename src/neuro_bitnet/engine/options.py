"""What one answer asks for: sampling settings, length and stop strings (shared by every backend)."""

from __future__ import annotations

from dataclasses import dataclass

from neuro_bitnet.engine.sampling import SamplingParams

# The defaults of every answer (engine, CLI options, daemon requests, MCP tools): the sampling
# values are SamplingParams' own field defaults.
DEFAULT_SAMPLING = SamplingParams()
DEFAULT_MAX_TOKENS = 512
DEFAULT_CTX_SIZE = 4096  # tokens of context (prompt + answer) a model is opened with


@dataclass(frozen=True)
class GenerationOptions(SamplingParams):
    """Sampling settings (validated as the engine's) plus the answer's length, stop strings and
    optional JSON schema."""

    max_tokens: int = DEFAULT_MAX_TOKENS
    stop: tuple[str, ...] = ()
    json_schema: dict | bool | None = None  # constrain the answer to this JSON schema

    def engine_kwargs(self) -> dict:
        """Keyword arguments for the native engine's generate/chat."""
        return {
            "max_tokens": self.max_tokens, "temperature": self.temperature, "top_k": self.top_k,
            "top_p": self.top_p, "min_p": self.min_p, "repeat_penalty": self.repeat_penalty,
            "seed": self.seed, "stop": list(self.stop), "json_schema": self.json_schema,
        }
