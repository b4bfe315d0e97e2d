"""Measuring the engine: prefill and decode speed, load time and peak memory."""

from __future__ import annotations

import resource
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class BenchResult:
    """Medians over the repeats, plus every sample."""

    model: str
    threads: int
    isa: str
    head: str
    kv_cache: str
    prompt_tokens: int
    gen_tokens: int
    load_seconds: float
    prefill_tokens_per_second: float
    decode_tokens_per_second: float
    peak_rss_mb: float
    prefill_samples: list[float] = field(default_factory=list)
    decode_samples: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6


def run_bench(path: Path, *, threads: int | None, prompt_tokens: int, gen_tokens: int, repeat: int,
              ctx_size: int | None = None, head: str | None = None, kv_cache: str | None = None,
              seed: int = 0) -> BenchResult:
    """Load the model once, then time ``repeat`` runs of prefill + greedy decode on random tokens."""
    from neuro_bitnet.engine import load_model

    ctx = ctx_size or max(prompt_tokens + gen_tokens + 8, 512)
    start = time.perf_counter()
    model = load_model(path, threads=threads, ctx_size=ctx, head=head, kv_cache=kv_cache)
    load_seconds = time.perf_counter() - start
    rng = np.random.default_rng(seed)
    high = min(model.n_vocab, 100_000)  # ordinary tokens, away from the special ones at the end
    prefill, decode = [], []
    logits = np.empty(model.n_vocab, dtype=np.float32)
    for _ in range(repeat + 1):  # the first run warms caches and page tables and is not counted
        ids = rng.integers(0, high, size=prompt_tokens).astype(np.int32)
        t0 = time.perf_counter()
        model._forward(ids, 0, logits, False)
        t1 = time.perf_counter()
        token = int(np.argmax(logits))
        for pos in range(prompt_tokens, prompt_tokens + gen_tokens):
            model._forward([token], pos, logits, False)
            token = int(np.argmax(logits))
        t2 = time.perf_counter()
        prefill.append(prompt_tokens / (t1 - t0))
        decode.append(gen_tokens / (t2 - t1) if gen_tokens else 0.0)
    model.reset()
    result = BenchResult(
        model=model.name,
        threads=model.threads,
        isa=model.isa,
        head=model.head,
        kv_cache=model.kv_cache,
        prompt_tokens=prompt_tokens,
        gen_tokens=gen_tokens,
        load_seconds=load_seconds,
        prefill_tokens_per_second=statistics.median(prefill[1:]),
        decode_tokens_per_second=statistics.median(decode[1:]),
        peak_rss_mb=peak_rss_mb(),
        prefill_samples=[round(x, 2) for x in prefill[1:]],
        decode_samples=[round(x, 2) for x in decode[1:]],
    )
    model.close()
    return result
