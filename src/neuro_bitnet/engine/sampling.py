"""Next-token selection: repetition penalty, top-k, top-p, min-p, temperature (llama.cpp order)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from neuro_bitnet.errors import EngineError


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings; temperature 0 means greedy. Out-of-range values raise EngineError
    (the one check of every path that samples: ``generate``, ``BatchScheduler.submit``, the
    backends' ``GenerationOptions`` and the daemon's requests)."""

    temperature: float = 0.7
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.1
    repeat_last_n: int = 64
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise EngineError("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise EngineError("top_p must be in (0, 1]")
        if not 0 <= self.min_p < 1:
            raise EngineError("min_p must be in [0, 1)")
        if self.top_k < 0:
            raise EngineError("top_k must be >= 0 (0 disables it)")
        if self.repeat_penalty <= 0:
            raise EngineError("repeat_penalty must be > 0")


class Sampler:
    """Chooses tokens from logits with one seeded random generator per generation."""

    def __init__(self, params: SamplingParams) -> None:
        self.params = params
        self._rng = np.random.default_rng(params.seed)

    def apply_repeat_penalty(self, logits: np.ndarray, history: Sequence[int]) -> np.ndarray:
        """Penalise tokens seen in the last ``repeat_last_n`` tokens (CTRL-style, as llama.cpp)."""
        penalty = self.params.repeat_penalty
        if penalty == 1.0 or not history or self.params.repeat_last_n == 0:
            return logits
        recent = np.unique(np.asarray(history[-self.params.repeat_last_n :], dtype=np.int64))
        logits = logits.copy()
        values = logits[recent]
        logits[recent] = np.where(values > 0, values / penalty, values * penalty)
        return logits

    def sample(self, logits: np.ndarray, history: Sequence[int] = ()) -> int:
        """Pick the next token id from one row of logits."""
        p = self.params
        logits = self.apply_repeat_penalty(np.asarray(logits, dtype=np.float32), history)
        if p.temperature == 0:
            return int(np.argmax(logits))

        candidates = np.arange(logits.size)
        if 0 < p.top_k < logits.size:
            candidates = np.argpartition(logits, -p.top_k)[-p.top_k :]
        cand_logits = logits[candidates].astype(np.float64)
        order = np.argsort(-cand_logits, kind="stable")
        candidates, cand_logits = candidates[order], cand_logits[order]

        probs = np.exp(cand_logits - cand_logits[0])
        probs /= probs.sum()
        if p.top_p < 1.0:
            keep = int(np.searchsorted(np.cumsum(probs), p.top_p) + 1)
            candidates, cand_logits, probs = candidates[:keep], cand_logits[:keep], probs[:keep]
        if p.min_p > 0:
            keep_mask = probs >= p.min_p * probs[0]
            candidates, cand_logits = candidates[keep_mask], cand_logits[keep_mask]

        scaled = (cand_logits - cand_logits[0]) / p.temperature
        final = np.exp(scaled)
        final /= final.sum()
        return int(candidates[self._rng.choice(final.size, p=final)])
