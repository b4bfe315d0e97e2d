"""Time one engine on one GGUF file; print one JSON object on stdout.

Run by ``benchmarks/compare_peers.py`` in a fresh subprocess per engine, with the Python that has
the engine installed (the peers live in their own venv). Standalone on purpose: it imports only
the engine it measures, numpy and the standard library.

Every engine does the same work: load the model, then ``warmup + repeats`` runs of
"prefill ``prompt`` token ids in one call, then ``gen`` greedy single-token decode steps".
Each run uses a different prompt (its own first token) so no engine can reuse a KV-cache prefix.
Times are wall-clock around the engine calls, the greedy argmax included; each run also
reports the process CPU time of its prefill and decode (``time.process_time``: every thread of
the process, spin-waits included), which a busy machine distorts less than the wall clock.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from typing import Callable

import numpy as np

# Plain Llama-3 vocabulary ids, below the 256 special tokens at the end of the vocabulary.
TOKEN_LOW, TOKEN_HIGH, N_SPECIAL = 1000, 100000, 256


def prompt_ids(run: int, length: int, n_vocab: int) -> list[int]:
    """The prompt of run ``run``: deterministic ids, a different first token for every run."""
    high = min(TOKEN_HIGH, n_vocab - N_SPECIAL)
    low = min(TOKEN_LOW, high // 2)
    rng = np.random.default_rng(1234 + run)
    ids = rng.integers(low, high, size=length).tolist()
    ids[0] = low + run % (high - low)
    return ids


# A runner takes (prompt ids, decode steps) and returns the stamps (stamp()) before the prefill,
# after it and after the decode, and the decode steps taken.
Stamp = tuple[float, float]  # (wall seconds, process CPU seconds)
Runner = Callable[[list[int], int], tuple[Stamp, Stamp, Stamp, int]]


def stamp() -> Stamp:
    return time.perf_counter(), time.process_time()


def llama_cpp_runner(model: str, threads: int, ctx: int) -> tuple[Runner, dict]:
    """Upstream llama.cpp through llama-cpp-python's ``Llama.eval``."""
    import llama_cpp

    llm = llama_cpp.Llama(
        model_path=model, n_threads=threads, n_threads_batch=threads, n_ctx=ctx,
        n_batch=512, n_ubatch=512, logits_all=False, verbose=False,
    )

    n_vocab = llm.n_vocab()

    def argmax_last() -> int:
        # Without logits_all, eval() keeps no logits in Python: read the last row from the context.
        logits = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llm.ctx, -1), shape=(n_vocab,))
        return int(np.argmax(logits))

    def run(ids: list[int], steps: int) -> tuple[Stamp, Stamp, Stamp, int]:
        llm.reset()  # eval() then drops the KV cache from position 0
        t0 = stamp()
        llm.eval(ids)
        token = argmax_last()
        t1 = stamp()
        for _ in range(steps):
            llm.eval([token])
            token = argmax_last()
        return t0, t1, stamp(), steps

    info = {"version": getattr(llama_cpp, "__version__", "?"), "n_vocab": n_vocab,
            "system": llama_cpp.llama_print_system_info().decode()}
    return run, info


def ik_llama_runner(model: str, threads: int, ctx: int) -> tuple[Runner, dict]:
    """ik_llama.cpp through ik-llama-cpp-python's model/context wrappers (its ``generate``
    samples through a Python loop over the whole vocabulary, so it is not used here)."""
    import ik_llama_cpp
    from ik_llama_cpp import _ctypes_api as C
    from ik_llama_cpp._internals import IkContext, IkModel, make_batch_range, make_batch_single

    ik_model = IkModel(model)
    # Flash attention off: the wheel's IQK flash-attention asserts on CPUs without AVX-VNNI
    # (the wrapper's own IkLlama turns it off there too).
    ik_ctx = IkContext(ik_model, n_ctx=ctx, n_threads=threads, flash_attn=False)
    n_vocab = ik_model.n_vocab

    def argmax_last() -> int:
        logits = np.ctypeslib.as_array(ik_ctx.get_logits(-1), shape=(n_vocab,))
        return int(np.argmax(logits))

    def decode(batch) -> None:
        ret = ik_ctx.decode(batch)
        C.llama_batch_free(batch)
        if ret != 0:
            raise RuntimeError(f"llama_decode failed: {ret}")

    def run(ids: list[int], steps: int) -> tuple[Stamp, Stamp, Stamp, int]:
        ik_ctx.kv_cache_clear()
        t0 = stamp()
        decode(make_batch_range(ids, pos_start=0, logits_last=True))
        token = argmax_last()
        t1 = stamp()
        for i in range(steps):
            decode(make_batch_single(token, len(ids) + i))
            token = argmax_last()
        return t0, t1, stamp(), steps

    return run, {"version": ik_llama_cpp.__version__, "n_vocab": n_vocab, "model": ik_model.desc}


def neuro_runner(model: str, threads: int, ctx: int) -> tuple[Runner, dict]:
    """neuro-bitnet's own engine through its public Python API."""
    from neuro_bitnet.engine import load_model

    m = load_model(model, threads=threads, ctx_size=ctx)

    def run(ids: list[int], steps: int) -> tuple[Stamp, Stamp, Stamp, int]:
        # steps + 1 tokens: the first comes from the prefill logits, each later one costs a step.
        answer = m.generate(ids, max_tokens=steps + 1, temperature=0.0, repeat_penalty=1.0)
        c0 = time.process_time()  # the generator is lazy: its prefill runs at the first next()
        c1 = None
        for _ in answer:
            if c1 is None:  # the first text arrives right after the prefill (CPU split there)
                c1 = time.process_time()
        c2 = time.process_time()
        s = answer.result  # wall times from the engine's own clock, split exactly at the prefill
        prefill_end = s.prefill_seconds
        return (0.0, c0), (prefill_end, c2 if c1 is None else c1), (prefill_end + s.decode_seconds, c2), \
            max(s.generated_tokens - 1, 0)

    return run, {"n_vocab": m.n_vocab, "isa": m.isa, "head": m.head}


RUNNERS: dict[str, Callable[[str, int, int], tuple[Runner, dict]]] = {
    "llama.cpp": llama_cpp_runner,
    "ik_llama.cpp": ik_llama_runner,
    "ik_llama.cpp-r4": ik_llama_runner,
    "neuro-bitnet": neuro_runner,
}


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("engine", choices=sorted(RUNNERS))
    parser.add_argument("model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ctx", type=int, default=4096)
    parser.add_argument("--prompt", type=int, default=128)
    parser.add_argument("--gen", type=int, default=64)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    t0 = time.perf_counter()
    run, info = RUNNERS[args.engine](args.model, args.threads, args.ctx)
    load_s = time.perf_counter() - t0

    runs = []
    for i in range(args.warmup + args.repeats):
        t0, t1, t2, steps = run(prompt_ids(i, args.prompt, info["n_vocab"]), args.gen)
        if i < args.warmup:
            continue
        prefill_s, decode_s = t1[0] - t0[0], t2[0] - t1[0]
        runs.append({
            "prefill_s": prefill_s,
            "decode_s": decode_s,
            "prefill_cpu_s": t1[1] - t0[1],
            "decode_cpu_s": t2[1] - t1[1],
            "decode_steps": steps,
            "prefill_tps": args.prompt / prefill_s,
            "decode_tps": steps / decode_s if decode_s > 0 else 0.0,
        })
    result = {"engine": args.engine, "load_s": load_s, "peak_rss_mb": peak_rss_mb(), "runs": runs, "info": info}
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
