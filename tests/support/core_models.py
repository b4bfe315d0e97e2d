"""Tiny random model specs for the C core's tests (`_core.Model`), and how their logits are run
and compared with the numpy reference."""

from __future__ import annotations

import numpy as np

from neuro_bitnet.engine import _core
from neuro_bitnet.engine.quants import pack_i2s_codes

FEATURES = _core.cpu_features()
HAS_AVX2 = FEATURES["avx2"]
# The SIMD kernel sets this CPU runs, best first ("auto" takes the first, else "portable").
SIMD_SETS = [s for s, ok in (("amx", HAS_AVX2 and FEATURES["avx512vnni"] and FEATURES["amx"]),
                                ("avx512vnni", HAS_AVX2 and FEATURES["avx512vnni"]), ("avx2", HAS_AVX2)) if ok]
BEST_ISA = SIMD_SETS[0] if SIMD_SETS else "portable"


def _ternary(rng: np.random.Generator, rows: int, cols: int) -> dict:
    """Random ternary rows, zero-padded to whole 128-weight blocks (as ffn_down must be)."""
    w = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=(rows, cols), p=[0.3, 0.4, 0.3])
    padded = -(-cols // 128) * 128
    w = np.pad(w, ((0, 0), (0, padded - cols)))
    # scale ~ 1/sqrt(cols) keeps activations O(1) through the layers
    scale = float(rng.uniform(0.5, 1.5) / np.sqrt(cols))
    return {"data": pack_i2s_codes(w), "scale": scale, "rows": rows, "cols": padded}


def _embd(rng: np.random.Generator, shape: tuple[int, int], dtype: str) -> np.ndarray:
    a = rng.normal(0.0, 0.5, size=shape).astype(np.float32)
    if dtype == "f32":
        return a
    if dtype == "f16":
        return a.astype(np.float16)
    return (a.view(np.uint32) >> 16).astype(np.uint16)  # bf16 bits (truncated)


def make_spec(
    seed: int = 0,
    *,
    n_vocab: int = 300,
    n_embd: int = 128,
    n_ff: int = 384,
    n_head: int = 4,
    n_head_kv: int = 2,
    head_dim: int = 32,
    n_layer: int = 2,
    ctx_size: int = 48,
    n_threads: int = 2,
    ffn_act: str = "relu2",
    sub_norms: bool = True,
    rope_neox: bool = True,
    head: str = "exact",
    embd_type: str = "f16",
    tied: bool = True,
) -> dict:
    """A random model spec; numpy arrays are passed as read-only memoryviews (like an mmap)."""
    rng = np.random.default_rng(seed)

    def ro(a: np.ndarray) -> memoryview:
        return memoryview(np.ascontiguousarray(a)).toreadonly()

    def norm(n: int) -> memoryview:
        return ro(rng.uniform(0.5, 1.5, size=n).astype(np.float32))

    D, KV = n_head * head_dim, n_head_kv * head_dim
    layers = []
    for _ in range(n_layer):
        layer = {
            "attn_norm": norm(n_embd),
            "ffn_norm": norm(n_embd),
            "attn_q": _ternary(rng, D, n_embd),
            "attn_k": _ternary(rng, KV, n_embd),
            "attn_v": _ternary(rng, KV, n_embd),
            "attn_output": _ternary(rng, n_embd, D),
            "ffn_gate": _ternary(rng, n_ff, n_embd),
            "ffn_up": _ternary(rng, n_ff, n_embd),
            "ffn_down": _ternary(rng, n_embd, n_ff),
        }
        if sub_norms:
            layer["attn_sub_norm"] = norm(D)
            layer["ffn_sub_norm"] = norm(n_ff)
        for k in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"):
            layer[k]["data"] = ro(layer[k]["data"])
        layers.append(layer)
    spec = {
        "n_vocab": n_vocab, "n_embd": n_embd, "n_ff": n_ff, "n_head": n_head,
        "n_head_kv": n_head_kv, "head_dim": head_dim, "n_layer": n_layer, "ctx_size": ctx_size,
        "n_threads": n_threads, "rms_eps": 1e-5, "rope_theta": 10000.0, "rope_neox": rope_neox,
        "sub_norms": sub_norms, "ffn_act": ffn_act, "head": head,
        "tok_embd": ro(_embd(rng, (n_vocab, n_embd), embd_type)), "tok_embd_type": embd_type,
        "output_norm": norm(n_embd), "layers": layers,
    }
    if not tied:
        spec["output"] = ro(_embd(rng, (n_vocab, n_embd), embd_type))
        spec["output_type"] = embd_type
    return spec


def run(model: _core.Model, tokens: list[int], n_past: int, all_logits: bool = True) -> np.ndarray:
    toks = np.asarray(tokens, dtype=np.int32)
    out = np.zeros((len(tokens) if all_logits else 1, model.n_vocab), dtype=np.float32)
    model.forward(toks, n_past, out, all_logits=all_logits)
    return out


def assert_close(got: np.ndarray, want: np.ndarray, rel: float = 1e-3) -> None:
    """Within rel of the reference's logit range, except for a tiny fraction of elements.

    Both sides quantize activations to int8 by rounding v * s. C and numpy sum floats in a
    different order (attention dots, softmax sums), so a value sitting right on a .5 tie can round
    the other way: one int8 activation moves by one step. That happens in roughly one model out
    of 40 here, and then one token's logits move by ~1.5e-3 of the range (otherwise the match is
    ~1e-7). So: at most 2% of the elements beyond rel, none beyond 10 * rel (real bugs, e.g. a
    wrong RoPE layout or activation, give 5e-2 to 3e-1).
    """
    err = np.abs(got - want) / float(np.ptp(want))
    assert err.max() <= 10 * rel, f"max error {err.max():.3g} of the logit range"
    assert (err > rel).mean() <= 0.02, f"{(err > rel).sum()} of {err.size} logits off by > {rel} of the range"
