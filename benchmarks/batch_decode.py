"""Aggregate decode throughput of the engine's BatchScheduler with 1, 2, 4 and 8 sequences.

In-process (no daemon): loads the synthetic 2B model (or --model) with one KV slot per
sequence, and per round and batch size submits N greedy requests of --prompt-tokens random ids,
steps until every request has its first token (the prompts are read), then times --steps decode
steps, each one forward pass over the N sequences' next tokens. Batch sizes are interleaved
within each round; the table shows medians over the rounds. A "generate" row times
BitNetModel.generate on the same prompt length, the single-sequence path the scheduler must not
slow down.

    python benchmarks/batch_decode.py [--rounds 3] [--steps 16] [--threads 2]

Decoding one sequence is bound by reading the weights; N sequences in one pass read them once,
so the aggregate should grow with N until compute or attention dominates.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from neuro_bitnet.engine import load_model
from neuro_bitnet.engine.batch import BatchScheduler


def _model_path(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    from neuro_bitnet.engine.synthetic import synthetic_model_path

    return synthetic_model_path("2b", Path.home() / ".cache" / "neuro-bitnet" / "test-models")


def batch_round(sched: BatchScheduler, prompts: list[list[int]], steps: int) -> float:
    """Aggregate decode tokens/s of one batch of len(prompts) sequences over `steps` steps."""
    reqs = [sched.submit(p, max_tokens=steps + 2, temperature=0) for p in prompts]
    while not all(r.tokens or r.done for r in reqs):
        sched.step()
    before = sum(len(r.tokens) for r in reqs)
    start = time.perf_counter()
    for _ in range(steps):
        sched.step()
    seconds = time.perf_counter() - start
    made = sum(len(r.tokens) for r in reqs) - before
    for r in reqs:
        r.cancel()
    list(sched.run())
    return made / seconds


def generate_round(model, prompt: list[int], steps: int) -> float:
    """Decode tokens/s of BitNetModel.generate (one sequence, slot 0)."""
    model.reset()
    answer = model.generate(prompt, max_tokens=steps + 1, temperature=0)
    list(answer)
    return answer.result.decode_tokens_per_second


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="a GGUF file (default: the synthetic 2B model, built on first use)")
    ap.add_argument("--sizes", default="1,2,4,8", help="batch sizes (comma-separated)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=16, help="timed decode steps per batch")
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--isa", default=None)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    ctx = args.prompt_tokens + args.steps + 8
    model = load_model(_model_path(args.model), threads=args.threads, ctx_size=ctx, isa=args.isa,
                       parallel=max(sizes))
    sched = BatchScheduler(model)
    rng = np.random.default_rng(0)
    results: dict[str, list[float]] = {"generate": [], **{str(n): [] for n in sizes}}
    for rnd in range(args.rounds):
        for n in sizes[rnd % len(sizes):] + sizes[: rnd % len(sizes)]:  # a different order each round
            prompts = [[int(t) for t in rng.integers(0, model.n_vocab, size=args.prompt_tokens)] for _ in range(n)]
            results[str(n)].append(batch_round(sched, prompts, args.steps))
        prompt = [int(t) for t in rng.integers(0, model.n_vocab, size=args.prompt_tokens)]
        results["generate"].append(generate_round(model, prompt, args.steps))
        print(f"round {rnd + 1}/{args.rounds}: "
              + ", ".join(f"{k}: {v[-1]:.2f}" for k, v in results.items()), flush=True)
    base = statistics.median(results[str(sizes[0])]) if sizes[0] == 1 else None
    print(f"\n{model.name}, {model.threads} threads, isa {model.isa}, prompt {args.prompt_tokens} tokens, "
          f"{args.steps} decode steps, medians of {args.rounds} rounds")
    print("| sequences | aggregate decode tok/s | per sequence tok/s | vs 1 sequence |")
    print("|---|---|---|---|")
    med = statistics.median(results["generate"])
    print(f"| 1 (generate) | {med:.2f} | {med:.2f} | {med / base:.2f}x |" if base else f"| 1 (generate) | {med:.2f} |")
    for n in sizes:
        med = statistics.median(results[str(n)])
        ratio = f"{med / base:.2f}x" if base else ""
        print(f"| {n} | {med:.2f} | {med / n:.2f} | {ratio} |")


if __name__ == "__main__":
    main()
