"""Load benchmark of the daemon: time to first token and tokens/s at 1, 4 and 16 concurrent clients.

    python benchmarks/daemon_load.py --model tests/fixtures/bitnet-b1.58/model.gguf
    python benchmarks/daemon_load.py --url http://127.0.0.1:11435     # an already running daemon

Every client sends streamed chat completions with a shared system prompt (so the KV-cache prefix
reuse is exercised) and a distinct question. Reports, per concurrency level: requests, median and
p95 time to first token, per-client decode tokens/s, and the server's aggregate tokens/s.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

SYSTEM = "You are a concise assistant. Answer in one or two sentences. " * 4


async def one_request(client: httpx.AsyncClient, question: str, max_tokens: int) -> tuple[float, float, int]:
    """(seconds to first token, seconds total, completion tokens) of one streamed answer."""
    body = {"model": "default", "stream": True, "max_tokens": max_tokens, "temperature": 0.7, "seed": 1,
            "stream_options": {"include_usage": True},
            "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": question}]}
    start = time.perf_counter()
    first = None
    tokens = 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
            for choice in event.get("choices", []):
                if first is None and choice.get("delta", {}).get("content"):
                    first = time.perf_counter() - start
    total = time.perf_counter() - start
    return (first if first is not None else total), total, tokens


async def run_level(url: str, headers: dict, clients: int, rounds: int, max_tokens: int) -> dict:
    limits = httpx.Limits(max_connections=clients + 2)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=600, limits=limits) as client:
        async def worker(cid: int) -> list[tuple[float, float, int]]:
            return [await one_request(client, f"Question {cid}-{r}: what is {cid + r} plus {r}?", max_tokens)
                    for r in range(rounds)]

        start = time.perf_counter()
        results = [r for rs in await asyncio.gather(*(worker(c) for c in range(clients))) for r in rs]
        wall = time.perf_counter() - start
    ttfts = sorted(r[0] for r in results)
    per_client = [r[2] / (r[1] - r[0]) for r in results if r[2] > 1 and r[1] > r[0]]
    return {
        "clients": clients,
        "requests": len(results),
        "ttft_p50": statistics.median(ttfts),
        "ttft_p95": ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))],
        "client_tps": statistics.median(per_client) if per_client else 0.0,
        "server_tps": sum(r[2] for r in results) / wall,
        "wall": wall,
    }


def start_server(model: str, threads: int | None, ctx: int) -> tuple[subprocess.Popen, str]:
    args = [sys.executable, "-m", "neuro_bitnet.server", "--model", model, "--port", "0", "--quiet",
            "--ctx-size", str(ctx)]
    if threads:
        args += ["--threads", str(threads)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if " on http://" in line:
            return proc, line.split(" on ", 1)[1].split()[0]
    raise SystemExit("the daemon did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="benchmark a running daemon instead of starting one")
    fixture = Path(__file__).resolve().parents[1] / "tests/fixtures/bitnet-b1.58/model.gguf"
    parser.add_argument("--model", default=str(fixture))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--ctx-size", type=int, default=2048)
    parser.add_argument("--levels", default="1,4,16", help="concurrency levels")
    parser.add_argument("--rounds", type=int, default=2, help="requests per client per level")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args()

    proc = None
    url = args.url
    if url is None:
        proc, url = start_server(args.model, args.threads, args.ctx_size)
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    try:
        health = httpx.get(url + "/health", headers=headers).json()
        print(f"daemon {url}  model {health['model']}  ctx {health['ctx_size']}  max_tokens {args.max_tokens}")
        asyncio.run(run_level(url, headers, 1, 1, 8))  # warm-up
        print(f"{'clients':>7} {'requests':>8} {'TTFT p50':>9} {'TTFT p95':>9} {'tok/s/client':>12} "
              f"{'tok/s total':>11} {'wall s':>7}")
        for level in (int(x) for x in args.levels.split(",")):
            r = asyncio.run(run_level(url, headers, level, args.rounds, args.max_tokens))
            print(f"{r['clients']:>7} {r['requests']:>8} {r['ttft_p50'] * 1000:>7.0f}ms {r['ttft_p95'] * 1000:>7.0f}ms "
                  f"{r['client_tps']:>12.1f} {r['server_tps']:>11.1f} {r['wall']:>7.2f}")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(60)


if __name__ == "__main__":
    main()
