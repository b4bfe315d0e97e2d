"""The API's ranges for sampling values: one table for every dialect of the server (the OpenAI
routes, the Ollama routes and the MCP tools), checked where each builds its ``GenerationSpec``.

They are stricter than the engine's own rule (``engine.sampling.SamplingParams``, what it can run
at all): a temperature of 5 runs, but no client means it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from neuro_bitnet.server.errors import bad_request


@dataclass(frozen=True)
class Range:
    """Numbers from ``low`` to ``high`` (None: no upper end); an open end is itself outside."""

    low: float
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def __contains__(self, value: float) -> bool:
        # Comparisons written so that NaN is outside every range.
        above = value > self.low if self.low_open else value >= self.low
        if self.high is None:
            return above
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def __str__(self) -> str:
        low = f"more than {self.low:g}" if self.low_open else f"at least {self.low:g}"
        if self.high is None:
            return low
        if not (self.low_open or self.high_open):
            return f"between {self.low:g} and {self.high:g}"
        high = f"less than {self.high:g}" if self.high_open else f"at most {self.high:g}"
        return f"{low} and {high}"


# By the engine's keyword names, which are also the request fields of both HTTP dialects.
SAMPLING_LIMITS: dict[str, Range] = {
    "temperature": Range(0, 2),
    "top_k": Range(0),  # 0 disables it
    "top_p": Range(0, 1, low_open=True),
    "min_p": Range(0, 1, high_open=True),
    "repeat_penalty": Range(0, 10, low_open=True),
}


def check_sampling(sampling: Mapping[str, Any]) -> None:
    """A 400 naming the first value of ``sampling`` (engine keyword arguments) out of its range."""
    for name, limit in SAMPLING_LIMITS.items():
        value = sampling.get(name)
        if value is not None and value not in limit:
            raise bad_request(f"{name} must be {limit}, not {value:g}", name, code="invalid_sampling")
