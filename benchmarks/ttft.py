"""Time from pressing enter to the first token of `neuro ask`, per backend, as a person sees it.

Each run spawns `neuro ask` (a new process, as from a shell) and measures, from the spawn, when
the first byte of the answer reaches stdout and when the process exits. Medians over --runs.

    python benchmarks/ttft.py --model FILE.gguf --backend native
    python benchmarks/ttft.py --model FILE.gguf --backend daemon     # starts `neuro serve` first
    BITNET_CLI_PATH=/path/to/llama-cli python benchmarks/ttft.py --model FILE.gguf --backend subprocess
"""

from __future__ import annotations

import argparse
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--backend", choices=["native", "daemon", "subprocess"], default="native")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

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
    ask = ["ask", QUESTION, "--model", str(args.model), "--backend", args.backend, "--temperature", "0",
           "--max-tokens", str(args.max_tokens)] + (["--threads", str(args.threads)] if args.threads else [])
    try:
        one_run(ask, env)  # warm the page cache (and the daemon)
        runs = [one_run(ask, env) for _ in range(args.runs)]
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(timeout=60)
    ttft = statistics.median(r[0] for r in runs)
    total = statistics.median(r[1] for r in runs)
    print("| backend | model | first token (s) | whole answer (s) |")
    print("|---|---|---|---|")
    print(f"| {args.backend} | {args.model.name} | {ttft:.2f} | {total:.2f} |")


if __name__ == "__main__":
    main()
