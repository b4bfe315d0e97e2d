"""A small fixed workload of the C core, for instruction counts and bit-exact comparisons.

Wall-clock numbers are useless on a busy machine; instruction counts are not. Run it under
callgrind (one thread, so no spin-waits enter the counts) and compare the per-function totals
before and after a change to the kernels:

    valgrind --tool=callgrind --callgrind-out-file=cg.out python benchmarks/core_instructions.py
    callgrind_annotate --inclusive=yes cg.out | grep nb_

It builds random weights of small BitNet shapes (n_ff not a multiple of 128, GQA), then for each
head (exact, q8, q4) prefills 70 tokens (one full 64-token batch and a tail of 6) and decodes 4,
and prints a digest of every logit: equal digests mean bit-identical results.
"""

from __future__ import annotations

import argparse
import hashlib

import numpy as np

from neuro_bitnet.engine import _core

SHAPES = dict(n_vocab=8000, n_embd=1024, n_ff=2752, n_head=8, n_head_kv=2, head_dim=128)


def spec(n_layer: int, head: str, ctx: int) -> dict:
    """Random ternary matrices (codes 0..2), f16 tied embeddings, random norms."""
    rng = np.random.default_rng(0)
    s = SHAPES
    D, KV, Fp = s["n_head"] * s["head_dim"], s["n_head_kv"] * s["head_dim"], -(-s["n_ff"] // 128) * 128

    def tmat(rows: int, cols: int, valid_cols: int) -> dict:
        codes = rng.integers(0, 3, size=(rows, cols), dtype=np.uint8)
        codes[:, valid_cols:] = 1  # zero weights in the padding
        c = codes.reshape(rows, cols // 128, 4, 32)  # weight 32 * i + j of a block -> byte j
        data = (c[:, :, 0] << 6 | c[:, :, 1] << 4 | c[:, :, 2] << 2 | c[:, :, 3]).reshape(-1)
        return {"data": np.ascontiguousarray(data), "scale": 2.0 / np.sqrt(valid_cols), "rows": rows, "cols": cols}

    def norm(n: int) -> np.ndarray:
        return rng.uniform(0.5, 1.5, size=n).astype(np.float32)

    E, F = s["n_embd"], s["n_ff"]
    layers = [
        {
            "attn_norm": norm(E), "ffn_norm": norm(E), "attn_sub_norm": norm(D), "ffn_sub_norm": norm(F),
            "attn_q": tmat(D, E, E), "attn_k": tmat(KV, E, E), "attn_v": tmat(KV, E, E),
            "attn_output": tmat(E, D, D), "ffn_gate": tmat(F, E, E), "ffn_up": tmat(F, E, E),
            "ffn_down": tmat(E, Fp, F),
        }
        for _ in range(n_layer)
    ]
    embd = rng.normal(0.0, 0.5, size=(s["n_vocab"], E)).astype(np.float16)
    return dict(
        s, n_layer=n_layer, ctx_size=ctx, n_threads=1, rms_eps=1e-5, rope_theta=500000.0,
        rope_neox=True, sub_norms=True, ffn_act="relu2", head=head, tok_embd=embd,
        tok_embd_type="f16", output_norm=norm(E), layers=layers,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--isa", default="auto", choices=["auto", "avx512vnni", "avx2", "portable"])
    ap.add_argument("--layers", type=int, default=2)
    args = ap.parse_args()
    n_prefill, n_decode = 70, 4
    prompt = np.random.default_rng(1).integers(0, SHAPES["n_vocab"], size=n_prefill, dtype=np.int32)
    for head in ("exact", "q8", "q4"):
        model = _core.Model(spec(args.layers, head, n_prefill + n_decode), isa=args.isa)
        digest = hashlib.sha256()
        logits = np.zeros(model.n_vocab, dtype=np.float32)
        model.forward(prompt, 0, logits)
        digest.update(logits.tobytes())
        tok = np.zeros(1, dtype=np.int32)
        for i in range(n_decode):
            tok[0] = int(np.argmax(logits))
            model.forward(tok, n_prefill + i, logits)
            digest.update(logits.tobytes())
        print(f"{head:5} {model.isa:8} {digest.hexdigest()[:16]}")


if __name__ == "__main__":
    main()
