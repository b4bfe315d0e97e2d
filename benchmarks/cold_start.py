"""Cold first token: `neuro ask --stream` from process spawn to the first answer byte, against a peer.

Every run is a new process, as from a shell. ``neuro-bitnet`` runs

    neuro ask "What is the capital of France?" --model MODEL --stream --backend native

and the time is taken when the first byte of the answer reaches its stdout. The peer,
``ik_llama.cpp`` (PyPI ``ik-llama-cpp-python``, run by ``--peers-python``, on the model
requantized to IQ2_BN_R4 as ``compare_peers.py`` does), loads the same model in a new process,
evaluates a prompt of the same number of tokens as ours and writes one byte when its first token
is chosen. ``--baseline`` adds ``neuro-bitnet`` with its load caches off (the ``tokenizers``
encoder and a head built at every load), to show what the caches save; ``--before SRC`` adds the
package from another checkout (e.g. the commit before this work). Engines are interleaved,
``--runs`` times; the table shows medians. One warm-up run of each fills the page cache and our
caches (the head copy, the tokenizer check).

    python benchmarks/cold_start.py --runs 7
    python benchmarks/cold_start.py --no-peer --baseline      # our side only, before/after
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUESTION = "What is the capital of France?"
BASELINE_ENV = {"NEURO_BITNET_TOKENIZER": "tokenizers", "NEURO_BITNET_HEAD_CACHE": "0"}

PEER_SCRIPT = r"""
import sys
import numpy as np
from ik_llama_cpp import _ctypes_api as C
from ik_llama_cpp._internals import IkContext, IkModel, make_batch_range
model, threads, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
ik_model = IkModel(model)
ctx = IkContext(ik_model, n_ctx=4096, n_threads=threads, flash_attn=False)
ids = [1000 + (i * 7919) % 90000 for i in range(n)]
batch = make_batch_range(ids, pos_start=0, logits_last=True)
if ctx.decode(batch) != 0:
    sys.exit("llama_decode failed")
C.llama_batch_free(batch)
token = int(np.argmax(np.ctypeslib.as_array(ctx.get_logits(-1), shape=(ik_model.n_vocab,))))
sys.stdout.write("x")
sys.stdout.flush()
"""


def neuro_cmd(model: str, threads: int | None, extra: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "neuro_bitnet.cli.main", "ask", QUESTION, "--model", model,
           "--backend", "native", "--temperature", "0", *extra]
    return cmd + (["--threads", str(threads)] if threads else [])


def first_byte(cmd: list[str], env: dict[str, str]) -> float:
    """Seconds from spawn to the first stdout byte; the process then runs to its end."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            stdin=subprocess.DEVNULL)
    first = proc.stdout.read(1)
    elapsed = time.perf_counter() - start
    proc.stdout.read()
    err = proc.stderr.read()
    proc.wait()
    if proc.returncode != 0 or not first:
        raise SystemExit(f"{cmd[:4]} failed (exit {proc.returncode}): {err.decode(errors='replace')[-600:]}")
    return elapsed


def prompt_tokens(model: str, threads: int | None, env: dict[str, str]) -> int:
    """How many prompt tokens our `ask` evaluates (from its --json usage)."""
    out = subprocess.run(neuro_cmd(model, threads, ["--json", "--max-tokens", "1"]), env=env,
                         capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise SystemExit(f"neuro ask --json failed: {out.stderr[-600:]}")
    data = json.loads(out.stdout)
    usage = data.get("usage") or {}
    return int(usage["prompt_tokens"])


def model_path(name: str) -> Path:
    """The file behind a catalog name or a path (for the peer's requantized copy)."""
    from neuro_bitnet.models.manager import ModelManager

    return ModelManager().ensure_model(name, assume_yes=True)


def peer_model(src: Path, peers_python: Path, cache_dir: Path, threads: int) -> Path:
    sys.path.insert(0, str(HERE))
    import compare_peers

    args = argparse.Namespace(cache_dir=cache_dir, peers_python=peers_python, threads=threads)
    return compare_peers.model_for("ik_llama.cpp-r4", src, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="synthetic-2b", help="catalog name or .gguf path")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=4, help="tokens our ask generates")
    parser.add_argument("--baseline", action="store_true", help="also run ours with the caches off")
    parser.add_argument("--before", type=Path, metavar="SRC",
                        help="also run the package in SRC (another checkout's src/, C core built in place)")
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--peers-python", type=Path,
                        default=Path(os.environ.get("NEURO_PEERS_PYTHON", "/work/peers-venv/bin/python")))
    parser.add_argument("--cache-dir", type=Path,
                        default=Path(os.environ.get("NEURO_BENCH_CACHE",
                                                    Path.home() / ".cache" / "neuro-bitnet-bench")))
    parser.add_argument("--json", type=Path, help="write the results here too")
    args = parser.parse_args()

    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    ours = neuro_cmd(args.model, args.threads, ["--stream", "--max-tokens", str(args.max_tokens)])
    engines: dict[str, tuple[list[str], dict[str, str]]] = {"neuro-bitnet": (ours, env)}
    if args.baseline:
        engines["neuro-bitnet (caches off)"] = (ours, {**env, **BASELINE_ENV})
    if args.before:
        # its own cache dir (another version's head-cache or verdict files must not evict ours),
        # the same models dir (which defaults to one under the cache dir)
        from neuro_bitnet.models.manager import ModelManager

        before_env = {"PYTHONPATH": str(args.before.resolve()),
                      "XDG_CACHE_HOME": str(args.cache_dir / "before-xdg-cache"),
                      "NEURO_BITNET_MODELS_DIR": str(ModelManager().models_dir)}
        engines[f"neuro-bitnet ({args.before})"] = (ours, {**env, **before_env})
    n_prompt = prompt_tokens(args.model, args.threads, env)
    if not args.no_peer:
        if not args.peers_python.is_file():
            raise SystemExit(f"no peers Python at {args.peers_python} (pip install ik-llama-cpp-python "
                             "numpy into a venv, pass --peers-python), or use --no-peer")
        peer_file = peer_model(model_path(args.model), args.peers_python, args.cache_dir, args.threads)
        engines["ik_llama.cpp (IQ2_BN_R4)"] = (
            [str(args.peers_python), "-c", PEER_SCRIPT, str(peer_file), str(args.threads), str(n_prompt)], env)

    for name, (cmd, e) in engines.items():  # warm-up: page cache, head copy, tokenizer verdict
        first_byte(cmd, e)
    times: dict[str, list[float]] = {name: [] for name in engines}
    load = [os.getloadavg()[0]]
    for run in range(args.runs):
        for name, (cmd, e) in engines.items():
            times[name].append(first_byte(cmd, e))
        load.append(os.getloadavg()[0])
        print(f"run {run + 1}/{args.runs}: " + ", ".join(f"{n} {t[-1]:.2f}s" for n, t in times.items()),
              file=sys.stderr)

    medians = {name: statistics.median(t) for name, t in times.items()}
    peer = next((m for n, m in medians.items() if n.startswith("ik_llama")), None)
    print(f"\ncold first token, {n_prompt}-token prompt, {args.threads} threads, {args.runs} interleaved runs "
          f"(load average {min(load):.1f}-{max(load):.1f})")
    peer_times = next((t for n, t in times.items() if n.startswith("ik_llama")), None)
    print("| engine | median s | min s | max s | vs ik_llama.cpp (ratio of medians) | median of per-round ratios |")
    print("|---|---|---|---|---|---|")
    for name, t in times.items():
        ratio = f"{medians[name] / peer:.2f}x" if peer else "-"
        paired = f"{statistics.median(a / b for a, b in zip(t, peer_times)):.2f}x" if peer_times else "-"
        print(f"| {name} | {medians[name]:.2f} | {min(t):.2f} | {max(t):.2f} | {ratio} | {paired} |")
    if args.json:
        args.json.write_text(json.dumps({"prompt_tokens": n_prompt, "threads": args.threads, "runs": times,
                                         "medians": medians, "loadavg": load}, indent=2))


if __name__ == "__main__":
    main()
