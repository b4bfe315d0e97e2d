"""Side-by-side speed of neuro-bitnet and its peers on the same BitNet b1.58 2B-4T model.

Engines, each on the format it runs best:

* ``ik_llama.cpp``  (PyPI ``ik-llama-cpp-python``): the model requantized to IQ2_BN with the
  package's bundled ``llama-quantize``; ``ik_llama.cpp-r4``: the same engine on IQ2_BN_R4 (rows
  interleaved by 4);
* ``llama.cpp``     (PyPI ``llama-cpp-python``): a lossless I2_S -> TQ2_0 repack, architecture
  renamed to ``bitnet`` so upstream loads it (SiLU instead of ReLU²: a speed test only);
* ``neuro-bitnet``  (this package): the official I2_S file as is; always measured last.

Every engine runs in its own subprocess (``peers/run_engine.py``) with the same thread count,
context size, prompt length and number of generated tokens: one warm-up run, then ``--repeats``
measured runs, for ``--rounds`` rounds with the engines interleaved. ``--prompt-tokens 128,1536``
sweeps prompt lengths: every round runs every length on every engine (one row per length and
engine). The table shows medians and each engine's ratio to the best peer at the same prompt
length. Without
``--model`` the synthetic 2B model (random weights, official layout) is built once and cached.

    python benchmarks/compare_peers.py --threads 2 --json results.json
    python benchmarks/compare_peers.py --prompt-tokens 128,512,1536,3072 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RUNNER = HERE / "peers" / "run_engine.py"
DEFAULT_PEERS_PYTHON = Path(os.environ.get("NEURO_PEERS_PYTHON", "/work/peers-venv/bin/python"))
DEFAULT_CACHE = Path(os.environ.get("NEURO_BENCH_CACHE", Path.home() / ".cache" / "neuro-bitnet-bench"))
PEERS = ("ik_llama.cpp", "ik_llama.cpp-r4", "llama.cpp")
OURS = "neuro-bitnet"
ENGINES = (*PEERS, OURS)
IK_TYPES = {"ik_llama.cpp": "IQ2_BN", "ik_llama.cpp-r4": "IQ2_BN_R4"}  # llama-quantize type names
FORMATS = {**IK_TYPES, "llama.cpp": "TQ2_0 (arch bitnet)", OURS: "I2_S"}


class BenchError(Exception):
    """A step of the benchmark failed; the message says which."""


# ----------------------------------------------------------------------------- model files
def source_model(args: argparse.Namespace) -> Path:
    if args.model:
        if not args.model.is_file():
            raise BenchError(f"model file not found: {args.model}")
        return args.model
    from neuro_bitnet.engine.synthetic import synthetic_model_path

    print(f"synthetic {args.synthetic} model in {args.cache_dir} (built on first use) ...", file=sys.stderr)
    return synthetic_model_path(args.synthetic, args.cache_dir)


def ik_quantize_binary(peers_python: Path) -> Path:
    code = "from ik_llama_cpp.quantize import find_quantize_bin as f; print(f() or '')"
    out = subprocess.run([str(peers_python), "-c", code], capture_output=True, text=True)
    path = out.stdout.strip()
    if out.returncode != 0 or not path:
        raise BenchError(
            f"ik-llama-cpp-python's llama-quantize not found via {peers_python}: {out.stderr.strip()[-300:]}"
        )
    return Path(path)


def model_for(engine: str, src: Path, args: argparse.Namespace) -> Path:
    """The file ``engine`` runs, derived from ``src`` once and cached beside the other files."""
    if engine == OURS:
        return src
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{src.stem}-{src.stat().st_size}"
    if engine in IK_TYPES:
        qtype = IK_TYPES[engine]
        dst = args.cache_dir / f"{stem}.{qtype.lower()}.gguf"
        if not dst.is_file():
            binary = ik_quantize_binary(args.peers_python)
            tmp = dst.with_suffix(".part")
            cmd = [str(binary), "--allow-requantize", str(src), str(tmp), qtype, str(args.threads)]
            print(f"requantizing to {qtype}: {' '.join(cmd)}", file=sys.stderr)
            log = args.cache_dir / f"{stem}.{qtype.lower()}.log"
            with open(log, "w") as fh:
                rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT).returncode
            if rc != 0:
                raise BenchError(f"llama-quantize failed (exit {rc}); see {log}")
            os.replace(tmp, dst)
        return dst
    sys.path.insert(0, str(HERE / "peers"))
    from repack_tq2 import cached_repack

    return cached_repack(src, args.cache_dir)


def warm_page_cache(path: Path) -> None:
    """Read the file once so that every engine loads from memory, not from disk."""
    with open(path, "rb") as fh:
        while fh.read(1 << 24):
            pass


# ----------------------------------------------------------------------------- running
def run_engine(engine: str, model: Path, args: argparse.Namespace, prompt: int) -> dict:
    python = sys.executable if engine == OURS else str(args.peers_python)
    cmd = [
        python, str(RUNNER), engine, str(model),
        "--threads", str(args.threads), "--ctx", str(args.ctx), "--prompt", str(prompt),
        "--gen", str(args.gen), "--warmup", str(args.warmup), "--repeats", str(args.repeats),
    ]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=args.timeout)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise BenchError(f"{engine} failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result.update(model=str(model), format=FORMATS[engine], prompt=prompt, wall_s=wall, loadavg_before=load_before,
                  loadavg_after=os.getloadavg()[0])
    return result


def summarize(rounds: list[dict]) -> dict:
    """One engine's rounds (one subprocess each) as one result: medians over every measured run
    and every round's load time, the highest peak RSS and load averages."""
    runs = [r for rnd in rounds for r in rnd["runs"]]
    result = dict(rounds[-1], runs=runs, rounds=len(rounds))
    result.update(
        prefill_tps=statistics.median(r["prefill_tps"] for r in runs),
        decode_tps=statistics.median(r["decode_tps"] for r in runs),
        prefill_cpu_ms=statistics.median(1e3 * r["prefill_cpu_s"] / rounds[-1]["prompt"] for r in runs),
        load_s=statistics.median(rnd["load_s"] for rnd in rounds),
        peak_rss_mb=max(rnd["peak_rss_mb"] for rnd in rounds),
        loadavg_before=max(rnd["loadavg_before"] for rnd in rounds),
        loadavg_after=max(rnd["loadavg_after"] for rnd in rounds),
    )
    return result


def add_ratios(results: dict[str, dict]) -> None:
    """Each engine's throughput relative to the best peer (>1: faster than every peer)."""
    peers = [results[p] for p in PEERS if p in results]
    if not peers:
        return
    best = {k: max(p[k] for p in peers) for k in ("prefill_tps", "decode_tps")}
    for r in results.values():
        r["prefill_vs_best_peer"] = r["prefill_tps"] / best["prefill_tps"] if best["prefill_tps"] else None
        r["decode_vs_best_peer"] = r["decode_tps"] / best["decode_tps"] if best["decode_tps"] else None


def format_table(by_prompt: dict[int, dict[str, dict]], args: argparse.Namespace) -> str:
    """One row per prompt length and engine; ratios compare rows of the same prompt length."""
    head = ("prompt", "engine", "format", "prefill tok/s", "decode tok/s", "prefill CPU ms/tok", "load s",
            "peak RSS MiB", "prefill vs best peer", "decode vs best peer", "load avg")
    rows = [head]
    for prompt, results in by_prompt.items():
        for name, r in results.items():
            ratio = lambda v: f"{v:.2f}x" if v is not None else "-"  # noqa: E731
            rows.append((
                str(prompt), name, r["format"], f"{r['prefill_tps']:.1f}", f"{r['decode_tps']:.1f}",
                f"{r['prefill_cpu_ms']:.1f}", f"{r['load_s']:.2f}", f"{r['peak_rss_mb']:.0f}",
                ratio(r.get("prefill_vs_best_peer")),
                ratio(r.get("decode_vs_best_peer")), f"{r['loadavg_before']:.1f}/{r['loadavg_after']:.1f}",
            ))
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if 1 <= i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    prompts = ", ".join(str(p) for p in args.prompt_tokens)
    lines.append(
        f"\n{args.threads} threads, prompt {prompts} tokens, {args.gen} generated, ctx {args.ctx}; "
        f"{args.rounds} round(s), engines interleaved, each a fresh process: {args.warmup} warm-up then "
        f"{args.repeats} measured runs; medians over all measured runs. "
        "Prefill CPU = process CPU time per prompt token (all threads, spin-waits included). "
        "Load avg = highest 1-minute load before/after an engine (others on the machine add noise)."
    )
    return "\n".join(lines)


def machine_info() -> dict:
    cpu = ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), "")
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="an I2_S bitnet-b1.58 GGUF (default: the synthetic model)")
    p.add_argument("--synthetic", default="2b", help="synthetic model shape when --model is not given")
    p.add_argument("--cache-dir", type=Path, default=DEFAULT_CACHE, help="where derived model files are kept")
    p.add_argument("--peers-python", type=Path, default=DEFAULT_PEERS_PYTHON,
                   help="Python of the venv holding the peers (env NEURO_PEERS_PYTHON)")
    p.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated subset of {','.join(ENGINES)}")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--ctx", type=int, default=4096)
    p.add_argument("--prompt", type=int, help="prompt length in tokens (default 128)")
    p.add_argument("--prompt-tokens", type=prompt_lengths, metavar="N,N,...",
                   help="sweep these prompt lengths (e.g. 128,512,1536,3072): rows per length, "
                        "every round runs every length")
    p.add_argument("--gen", type=int, default=64)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--rounds", type=int, default=1,
                   help="run every engine this many times, interleaved (spreads the machine's noise evenly)")
    p.add_argument("--timeout", type=float, default=1800, help="seconds allowed per engine")
    p.add_argument("--json", type=Path, help="also write all results (every run) to this file ('-' for stdout)")
    args = p.parse_args(argv)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        p.error(f"unknown engine(s) {', '.join(unknown)}; choose from {', '.join(ENGINES)}")
    # Peers first, ours last, whatever order was given.
    args.engines = [e for e in ENGINES if e in engines]
    if args.prompt is not None and args.prompt_tokens is not None:
        p.error("give --prompt or --prompt-tokens, not both")
    args.prompt_tokens = args.prompt_tokens or [args.prompt if args.prompt is not None else 128]
    if max(args.prompt_tokens) + args.gen > args.ctx:
        p.error("the longest prompt + --gen must fit in --ctx")
    return args


def prompt_lengths(text: str) -> list[int]:
    """'128,1536' -> [128, 1536]: distinct positive lengths, in the order given."""
    try:
        lengths = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated token counts, got {text!r}") from None
    if not lengths or min(lengths) < 1 or len(set(lengths)) != len(lengths):
        raise argparse.ArgumentTypeError(f"expected distinct positive token counts, got {text!r}")
    return lengths


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        src = source_model(args)
        models: dict[str, Path] = {}
        for engine in args.engines:
            if engine != OURS and not args.peers_python.is_file():
                print(f"skipping {engine}: no peers venv at {args.peers_python} (see benchmarks/README.md)",
                      file=sys.stderr)
                continue
            models[engine] = model_for(engine, src, args)
        rounds: dict[tuple[int, str], list[dict]] = {(n, e): [] for n in args.prompt_tokens for e in models}
        for i in range(args.rounds):
            for prompt in args.prompt_tokens:
                for engine, model in models.items():
                    warm_page_cache(model)
                    print(f"round {i + 1}/{args.rounds}: running {engine} on {model.name}, prompt {prompt} ...",
                          file=sys.stderr)
                    rounds[prompt, engine].append(run_engine(engine, model, args, prompt))
        by_prompt = {n: {e: summarize(rounds[n, e]) for e in models} for n in args.prompt_tokens}
    except (BenchError, subprocess.TimeoutExpired) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for results in by_prompt.values():
        add_ratios(results)
    print(format_table(by_prompt, args))
    if args.json:
        payload = {
            "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "source_model": str(src),
            "machine": machine_info(),
            # keyed by prompt length (a JSON object key: its decimal string)
            "results_by_prompt": {str(n): results for n, results in by_prompt.items()},
        }
        if len(by_prompt) == 1:  # one prompt length (the default): also the flat shape of before
            payload["results"] = next(iter(by_prompt.values()))
        text = json.dumps(payload, indent=2)
        if str(args.json) == "-":
            print(text)
        else:
            args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
