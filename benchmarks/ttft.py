"""Time from pressing enter to the first token of `neuro ask`, per backend, as a person sees it.

Each run spawns `neuro ask` (a new process, as from a shell) and measures, from the spawn, when
the first byte of the answer reaches stdout and when the process exits. Medians over --runs.

    python benchmarks/ttft.py --model FILE.gguf --backend native
    python benchmarks/ttft.py --model FILE.gguf --backend daemon     # starts `neuro serve` first
    BITNET_CLI_PATH=/path/to/llama-cli python benchmarks/ttft.py --model FILE.gguf --backend subprocess

A grounded question: ``--storage DIR`` asks with ``neuro ask --storage DIR`` (index it first with
``neuro index``; up to 1,024 tokens of sources go in front of the question), ``--question`` sets
what is asked, and ``--peer`` adds ik_llama.cpp loading the same model (IQ2_BN_R4, as
``cold_start.py``) and evaluating a prompt of the same number of tokens, interleaved with ours:

    neuro index README.md docs -r --storage /tmp/idx --embedder all-minilm-l6-v2
    python benchmarks/ttft.py --model synthetic-2b --storage /tmp/idx --threads 2 --runs 3 --peer \
        --question "How does the head cache decide that a cached head is stale?"
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

QUESTION = "What is the capital of France?"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_run(args: list[str], env: dict[str, str]) -> tuple[float, float]:
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "neuro_bitnet.cli.main", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    first = proc.stdout.read(1)
    ttft = time.perf_counter() - start
    proc.stdout.read()
    proc.wait()
    if proc.returncode != 0 or not first:
        raise SystemExit(f"neuro ask failed (exit {proc.returncode})")
    return ttft, time.perf_counter() - start


def prompt_tokens(ask: list[str], env: dict[str, str]) -> int:
    """How many prompt tokens the ask evaluates (from its --json usage)."""
    out = subprocess.run([sys.executable, "-m", "neuro_bitnet.cli.main", *ask, "--json"], env=env,
                         capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise SystemExit(f"neuro ask --json failed: {out.stderr[-600:]}")
    return int(json.loads(out.stdout)["usage"]["prompt_tokens"])


def peer_command(model: str, threads: int, n_prompt: int) -> list[str]:
    """ik_llama.cpp loading ``model``'s IQ2_BN_R4 copy and evaluating ``n_prompt`` tokens."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import cold_start

    peers_python = Path(os.environ.get("NEURO_PEERS_PYTHON", "/work/peers-venv/bin/python"))
    cache_dir = Path(os.environ.get("NEURO_BENCH_CACHE", Path.home() / ".cache" / "neuro-bitnet-bench"))
    peer_file = cold_start.peer_model(cold_start.model_path(model), peers_python, cache_dir, threads)
    return [str(peers_python), "-c", cold_start.PEER_SCRIPT, str(peer_file), str(threads), str(n_prompt)]


def peer_run(cmd: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0 or proc.stdout != b"x":
        raise SystemExit(f"the peer failed (exit {proc.returncode}): {proc.stderr.decode(errors='replace')[-600:]}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="catalog name or .gguf path")
    parser.add_argument("--backend", choices=["native", "daemon", "subprocess"], default="native")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--storage", type=Path, help="ask a grounded question over this index")
    parser.add_argument("--question", default=QUESTION)
    parser.add_argument("--peer", action="store_true", help="also time ik_llama.cpp on a prompt of the same length")
    args = parser.parse_args()
    if args.peer and (args.backend != "native" or not args.threads):
        parser.error("--peer compares cold native runs: give --backend native and --threads")

    env = dict(os.environ)
    daemon = None
    if args.backend == "daemon":
        port = free_port()
        env["NEURO_DAEMON_URL"] = f"http://127.0.0.1:{port}"
        serve = [sys.executable, "-m", "neuro_bitnet.cli.main", "serve", "--model", str(args.model),
                 "--port", str(port)] + (["--threads", str(args.threads)] if args.threads else [])
        daemon = subprocess.Popen(serve, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in daemon.stdout:  # the server prints a ready line with its URL
            if f":{port}" in line:
                break
    else:
        env["NEURO_DAEMON_URL"] = "http://127.0.0.1:9"  # make sure no daemon is picked up
    ask = ["ask", args.question, "--model", str(args.model), "--backend", args.backend, "--temperature", "0",
           "--max-tokens", str(args.max_tokens)] + (["--threads", str(args.threads)] if args.threads else [])
    if args.storage:
        ask += ["--storage", str(args.storage)]
    peer = None
    try:
        n_prompt = prompt_tokens(ask, env)
        one_run(ask, env)  # warm the page cache (and the daemon)
        if args.peer:
            peer = peer_command(str(args.model), args.threads, n_prompt)
            peer_run(peer, env)
        runs, peer_runs, load = [], [], [os.getloadavg()[0]]
        for run in range(args.runs):  # interleaved
            runs.append(one_run(ask, env))
            if peer is not None:
                peer_runs.append(peer_run(peer, env))
            load.append(os.getloadavg()[0])
            print(f"run {run + 1}/{args.runs}: first token {runs[-1][0]:.2f}s"
                  + (f", peer {peer_runs[-1]:.2f}s" if peer_runs else ""), file=sys.stderr)
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(timeout=60)
    ttft = statistics.median(r[0] for r in runs)
    total = statistics.median(r[1] for r in runs)
    print(f"{n_prompt}-token prompt{' (grounded: --storage)' if args.storage else ''}, {args.runs} runs, "
          f"load average {min(load):.1f}-{max(load):.1f}")
    print("| backend | model | first token (s) | whole answer (s) |")
    print("|---|---|---|---|")
    print(f"| {args.backend} | {Path(args.model).name} | {ttft:.2f} | {total:.2f} |")
    if peer_runs:
        median = statistics.median(peer_runs)
        print(f"| ik_llama.cpp (IQ2_BN_R4): load + {n_prompt}-token prefill + 1 token | | {median:.2f} | "
              f"ratio {ttft / median:.2f}x |")


if __name__ == "__main__":
    main()
