"""Micro-benchmark of the C core's forward pass on random weights of BitNet b1.58 2B-4T shapes.

Builds the weights directly in numpy (no file), then prints prefill and decode tokens/s (median
of a few runs) for the exact and the q8 head:

    python benchmarks/core_forward.py [--threads 2] [--runs 3] [--layers 30]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from neuro_bitnet.engine import _core

SHAPES = dict(n_vocab=128256, n_embd=2560, n_ff=6912, n_head=20, n_head_kv=5, head_dim=128)


def _valid_byte_table() -> np.ndarray:
    """Maps any byte to an I2_S byte: each 2-bit code 3 becomes 1 (a zero weight)."""
    b = np.arange(256, dtype=np.uint8)
    out = np.zeros(256, dtype=np.uint8)
    for shift in (0, 2, 4, 6):
        code = (b >> shift) & 3
        out |= np.where(code == 3, 1, code).astype(np.uint8) << shift
    return out


def aligned(a: np.ndarray, align: int = 64) -> np.ndarray:
    """A copy of a at an address multiple of align (a GGUF mmap aligns tensors to 32 bytes;
    numpy's large allocations are only 16-byte aligned, which splits cache lines)."""
    raw = np.empty(a.nbytes + align, dtype=np.uint8)
    off = (-raw.ctypes.data) % align
    out = raw[off : off + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def random_spec(rng: np.random.Generator, n_layer: int, n_threads: int, head: str, ctx: int) -> dict:
    """A spec of 2B-4T shapes with random ternary weights and f16 tied embeddings."""
    s = SHAPES
    table = _valid_byte_table()
    D, KV = s["n_head"] * s["head_dim"], s["n_head_kv"] * s["head_dim"]

    def tmat(rows: int, cols: int) -> dict:
        data = aligned(table[np.frombuffer(rng.bytes(rows * cols // 4), dtype=np.uint8)])
        return {"data": data, "scale": 2.0 / np.sqrt(cols), "rows": rows, "cols": cols}

    def norm(n: int) -> np.ndarray:
        return np.ones(n, dtype=np.float32)

    layers = [
        {
            "attn_norm": norm(s["n_embd"]), "ffn_norm": norm(s["n_embd"]),
            "attn_sub_norm": norm(D), "ffn_sub_norm": norm(s["n_ff"]),
            "attn_q": tmat(D, s["n_embd"]), "attn_k": tmat(KV, s["n_embd"]),
            "attn_v": tmat(KV, s["n_embd"]), "attn_output": tmat(s["n_embd"], D),
            "ffn_gate": tmat(s["n_ff"], s["n_embd"]), "ffn_up": tmat(s["n_ff"], s["n_embd"]),
            "ffn_down": tmat(s["n_embd"], s["n_ff"]),
        }
        for _ in range(n_layer)
    ]
    # random f16 bit patterns with the top exponent bit cleared: finite, |v| < 2
    bits = np.frombuffer(rng.bytes(s["n_vocab"] * s["n_embd"] * 2), dtype=np.uint16) & 0xBFFF
    embd = aligned(bits.view(np.float16).reshape(s["n_vocab"], s["n_embd"]))
    return dict(
        s, n_layer=n_layer, ctx_size=ctx, n_threads=n_threads, rms_eps=1e-5, rope_theta=500000.0,
        rope_neox=True, sub_norms=True, ffn_act="relu2", head=head, tok_embd=embd,
        tok_embd_type="f16", output_norm=norm(s["n_embd"]), layers=layers,
    )


def bench(model: _core.Model, n_prefill: int, n_decode: int, runs: int) -> tuple[float, float]:
    """Median prefill and decode tokens/s."""
    rng = np.random.default_rng(1)
    logits = np.zeros(model.n_vocab, dtype=np.float32)
    prefill, decode = [], []
    for _ in range(runs):
        prompt = rng.integers(0, model.n_vocab, size=n_prefill, dtype=np.int32)
        t0 = time.perf_counter()
        model.forward(prompt, 0, logits)
        prefill.append(n_prefill / (time.perf_counter() - t0))
        tok = np.zeros(1, dtype=np.int32)
        t0 = time.perf_counter()
        for i in range(n_decode):
            tok[0] = int(np.argmax(logits))
            model.forward(tok, n_prefill + i, logits)
        decode.append(n_decode / (time.perf_counter() - t0))
    return statistics.median(prefill), statistics.median(decode)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--prefill", type=int, default=128)
    ap.add_argument("--decode", type=int, default=32)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--heads", default="exact,q8")
    ap.add_argument("--isa", default="auto", choices=["auto", "avx512vnni", "avx2", "portable"])
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    rows = []
    spec = random_spec(rng, args.layers, args.threads, "exact", args.prefill + args.decode + 8)
    for head in args.heads.split(","):
        spec["head"] = head  # same weights for every head
        t1 = time.perf_counter()
        model = _core.Model(spec, isa=args.isa)
        build = time.perf_counter() - t1
        pf, dc = bench(model, args.prefill, args.decode, args.runs)
        rows.append((head, model.isa, build, pf, dc))
        del model
    print(f"2B-4T shapes, {args.layers} layers, {args.threads} threads "
          f"(setup {time.perf_counter() - t0:.0f} s); median of {args.runs} runs")
    print(f"{'head':6} {'isa':9} {'build s':>8} {'prefill ' + str(args.prefill) + ' tok/s':>18} "
          f"{'decode tok/s':>13}")
    for head, isa, build, pf, dc in rows:
        print(f"{head:6} {isa:9} {build:8.2f} {pf:18.1f} {dc:13.2f}")


if __name__ == "__main__":
    main()
