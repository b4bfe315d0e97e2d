"""Load benchmark of the batching daemon: 1, 2, 4 and 8 concurrent greedy clients.

    python benchmarks/daemon_load.py                          # starts `neuro serve --model synthetic-2b --parallel 8`
    python benchmarks/daemon_load.py --model PATH --parallel 4 --levels 1,4
    python benchmarks/daemon_load.py --url http://127.0.0.1:11435   # a running daemon (RSS if it is local)
    python benchmarks/daemon_load.py --peer llama-server --parallel 4  # the anchor: llama.cpp's server

Each client sends --rounds streamed greedy completions one after the other (a distinct prompt of
about 20 tokens each, --max-tokens long). Per concurrency level it reports:

- aggregate decode tok/s: answer tokens after the first, summed over the level's requests,
  divided by the time from the level's first first-token to its last answer's end;
- end-to-end tok/s: every answer token divided by the level's wall time (prefill and queueing in);
- per-request decode tok/s (median): one answer's tokens after the first over its time after the
  first token;
- p50 / p95 time to first token (from sending the request);
- the daemon's peak RSS so far (VmHWM) and its growth over the RSS after the warm-up, beside the
  KV memory the level's slots fill (float32 keys and values of the longest prompt + answer, in
  each busy slot). A slot's pages stay resident once written, so this column is per level only
  with --repeats 1 (levels in increasing order); with more repeats it is the run's peak.

--repeats N runs the levels N times, in a rotated order each time (1,2,4,8 then 2,4,8,1, ...),
so that a slow spell of a shared machine spreads over every level; the table shows the medians
(TTFT percentiles over every request of the level). The ratio column is the aggregate decode
over the 1-client level's. The machine's load average is printed before and after: on a shared
machine only the ratios mean something.

--peer llama-server runs the same levels against llama.cpp's ``llama-server -np PARALLEL -c
PARALLEL*CTX`` (-c is its total, shared by the slots: each slot gets --ctx-size, as ours) on the
lossless TQ2_0 repack of --model (benchmarks/peers/llama_server.py: the binary is built once from
the tests' llama.cpp sources unless --peer-binary names one). Its /v1/completions stream ends with
a chunk carrying ``usage`` whether or not ``stream_options.include_usage`` is asked, so the token
counts come from the same field as ours. Its KV cache is f16 (the KV column is halved) and is
allocated and cleared for every slot at start, so its RSS after warm-up already holds all of it.
Every request opens its own connection (see run_level), for both servers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx


async def one_request(client: httpx.AsyncClient, prompt: str, max_tokens: int) -> dict:
    """Times (from the start) of the first token and of the end, and the answer's token count."""
    body = {"model": "default", "stream": True, "max_tokens": max_tokens, "temperature": 0, "prompt": prompt,
            "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    first = None
    tokens = prompt_tokens = 0
    async with client.stream("POST", "/v1/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data: {"):
                continue
            event = json.loads(line[6:])
            if event.get("usage"):
                tokens = event["usage"]["completion_tokens"]
                prompt_tokens = event["usage"]["prompt_tokens"]
            if first is None and any(c.get("text") for c in event.get("choices", [])):
                first = time.perf_counter()
    end = time.perf_counter()
    return {"start": start, "first": first if first is not None else end, "end": end, "tokens": tokens,
            "positions": prompt_tokens + tokens}


async def run_level(url: str, headers: dict, clients: int, rounds: int, max_tokens: int) -> dict:
    # a new connection per request: llama-server (--peer) sometimes closes a kept-alive connection
    # after a streamed answer, and a POST sent on it then fails ("disconnected without a response")
    limits = httpx.Limits(max_connections=clients + 2, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, headers=headers, timeout=1800, limits=limits) as client:
        async def worker(cid: int) -> list[dict]:
            return [await one_request(client, f"Client {cid}, request {r}: write a short story about the number "
                                      f"{cid * 10 + r} and the sea.", max_tokens) for r in range(rounds)]

        start = time.perf_counter()
        results = [r for rs in await asyncio.gather(*(worker(c) for c in range(clients))) for r in rs]
        wall = time.perf_counter() - start
    ttfts = sorted(r["first"] - r["start"] for r in results)
    decode_tokens = sum(max(r["tokens"] - 1, 0) for r in results)
    decode_span = max(r["end"] for r in results) - min(r["first"] for r in results)
    per_request = [(r["tokens"] - 1) / (r["end"] - r["first"]) for r in results
                   if r["tokens"] > 1 and r["end"] > r["first"]]
    return {
        "clients": clients,
        "requests": len(results),
        "tokens": sum(r["tokens"] for r in results) / len(results),
        "aggregate": decode_tokens / decode_span if decode_span > 0 else 0.0,
        "end_to_end": sum(r["tokens"] for r in results) / wall,
        "per_request": statistics.median(per_request) if per_request else 0.0,
        "ttfts": ttfts,
        "wall": wall,
        "positions": max(r["positions"] for r in results),  # the most a slot holds
    }


@contextmanager
def our_daemon(model: str, threads: int | None, ctx: int, parallel: int) -> Iterator[tuple[subprocess.Popen, str]]:
    """Start `neuro serve` on a free loopback port, yield (process, URL); terminate it at the end."""
    args = [sys.executable, "-m", "neuro_bitnet.cli.serve_cmd", "--model", model, "--port", "0", "--quiet",
            "--ctx-size", str(ctx), "--parallel", str(parallel), "--max-queue", "1024"]
    if threads:
        args += ["--threads", str(threads)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            if " on http://" in line:
                break
        else:
            raise SystemExit("the daemon did not start")
        yield proc, line.split(" on ", 1)[1].split()[0]
    finally:
        proc.terminate()
        proc.wait(60)


@contextmanager
def peer_server(args: argparse.Namespace) -> Iterator[tuple[subprocess.Popen, str, dict]]:
    """Start the --peer server on the TQ2_0 repack of --model; yield (process, URL, its /health-like info)."""
    here = Path(__file__).resolve().parent
    sys.path.insert(0, str(here / "peers"))
    sys.path.insert(0, str(here))
    import llama_server
    from compare_peers import DEFAULT_CACHE
    from repack_tq2 import cached_repack

    from neuro_bitnet.server.model_loader import resolve_model

    src, _ = resolve_model(args.model)
    model = cached_repack(src, DEFAULT_CACHE)
    binary = args.peer_binary or llama_server.server_binary()
    if not binary.is_file():
        raise SystemExit(f"--peer-binary {binary}: no such file")
    log = DEFAULT_CACHE / f"llama-server-np{args.parallel}.log"
    with llama_server.running(binary, model, parallel=args.parallel, ctx_per_slot=args.ctx_size,
                              threads=args.threads, log_path=log) as (proc, url):
        yield proc, url, {"model": f"llama-server {model.name}", "ctx_size": args.ctx_size,
                          "parallel": args.parallel, "path": str(src), "kv_factor": llama_server.KV_FACTOR}


def _status_kb(pid: int, field: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def _kv_bytes_per_token(path: str | None) -> int | None:
    """Keys and values of one position, from the served file's shapes (None when unknown)."""
    if not path:
        return None
    from neuro_bitnet.engine.architecture import HParams
    from neuro_bitnet.engine.gguf import GGUFFile
    from neuro_bitnet.engine.parallel import kv_bytes_per_token

    with GGUFFile(Path(path)) as f:
        return kv_bytes_per_token(HParams.from_metadata(f.metadata, n_vocab_fallback=1))


def main() -> None:
    # SIGTERM (e.g. from `timeout`) must unwind through the finally blocks that stop the servers
    # this started; Python's default would leave them running, orphaned.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="benchmark a running daemon instead of starting one")
    parser.add_argument("--model", default="synthetic-2b", help="catalog id or .gguf path (default: synthetic-2b)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--ctx-size", type=int, default=1024, help="per slot")
    parser.add_argument("--parallel", type=int, default=8, help="slots of the daemon started here")
    parser.add_argument("--levels", default="1,2,4,8", help="concurrency levels, run in this order")
    parser.add_argument("--rounds", type=int, default=2, help="requests per client per level")
    parser.add_argument("--repeats", type=int, default=3, help="runs of every level, interleaved (medians)")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--peer", choices=["llama-server"],
                        help="benchmark llama.cpp's llama-server (-np --parallel) on the TQ2_0 repack of --model")
    parser.add_argument("--peer-binary", type=Path, help="the llama-server to run (default: built once, cached)")
    args = parser.parse_args()
    if args.peer and args.url:
        parser.error("--peer starts its own server: it cannot be combined with --url")
    if args.peer_binary and not args.peer:
        parser.error("--peer-binary needs --peer")

    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    with ExitStack() as stack:
        proc: subprocess.Popen | None = None
        url = args.url
        if args.peer:
            proc, url, health = stack.enter_context(peer_server(args))
        else:
            if url is None:
                proc, url = stack.enter_context(our_daemon(args.model, args.threads, args.ctx_size, args.parallel))
            health = httpx.get(url + "/health", headers=headers).json()
        measure(args, url, headers, proc, health)


def measure(args: argparse.Namespace, url: str, headers: dict, proc: subprocess.Popen | None, health: dict) -> None:
    """Warm up, run the levels --repeats times, print the table."""
    pid = proc.pid if proc is not None else health.get("pid")
    kv_token = _kv_bytes_per_token(health.get("path"))
    if kv_token:
        kv_token = int(kv_token * health.get("kv_factor", 1))
    print(f"daemon {url}  model {health['model']}  ctx {health['ctx_size']} per slot  "
          f"parallel {health.get('parallel')}  max_tokens {args.max_tokens}  rounds {args.rounds}  "
          f"repeats {args.repeats}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    asyncio.run(run_level(url, headers, 1, 1, 4))  # warm-up: pages of the weights, the head cache
    base_rss = _status_kb(pid, "VmRSS") if pid else None
    print(f"RSS after warm-up: {base_rss / 1024:.0f} MiB" if base_rss else "RSS: not readable here")
    print(f"{'clients':>7} {'tok/req':>7} {'agg dec tok/s':>13} {'ratio':>5} {'e2e tok/s':>9} "
          f"{'req tok/s':>9} {'TTFT p50':>9} {'TTFT p95':>9} {'peak RSS':>9} {'growth':>7} {'KV':>6}")
    levels = [int(x) for x in args.levels.split(",")]
    runs: dict[int, list[dict]] = {level: [] for level in levels}
    # levels in increasing order first, then rotated: with --repeats 1, peak RSS is per level
    for rep in range(args.repeats):
        for level in levels[rep % len(levels):] + levels[: rep % len(levels)]:
            runs[level].append(asyncio.run(run_level(url, headers, level, args.rounds, args.max_tokens)))
            runs[level][-1]["peak_kb"] = _status_kb(pid, "VmHWM") if pid else None
        print(f"repeat {rep + 1}/{args.repeats}: "
              + ", ".join(f"{lv}: {runs[lv][-1]['aggregate']:.1f}" for lv in levels), flush=True)
    base = statistics.median(r["aggregate"] for r in runs[levels[0]])
    for level in levels:
        rs = runs[level]
        agg = statistics.median(r["aggregate"] for r in rs)
        ttfts = sorted(t for r in rs for t in r["ttfts"])
        p50, p95 = statistics.median(ttfts), ttfts[min(len(ttfts) - 1, int(0.95 * len(ttfts)))]
        slots = min(level, health.get("parallel") or level)
        positions = max(r["positions"] for r in rs)
        kv = f"{slots * positions * kv_token / 2**20:>4.0f}M" if kv_token else "?"
        peak = max((r["peak_kb"] for r in rs if r["peak_kb"]), default=None)
        rss = (f"{peak / 1024:>7.0f}M {(peak - base_rss) / 1024:>6.0f}M" if peak and base_rss
               else f"{'?':>8} {'?':>7}")
        print(f"{level:>7} {statistics.median(r['tokens'] for r in rs):>7.1f} {agg:>13.2f} {agg / base:>5.2f} "
              f"{statistics.median(r['end_to_end'] for r in rs):>9.2f} "
              f"{statistics.median(r['per_request'] for r in rs):>9.2f} {p50 * 1000:>7.0f}ms "
              f"{p95 * 1000:>7.0f}ms {rss} {kv:>6}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
