"""Pure-numpy reference of the C core's forward pass (same spec dict, same float32 op order).

It mirrors `engine/csrc/forward.c` step by step so that the int8 activation quantization sees the
same float32 values and rounds the same way; only float summation orders differ (BLAS vs C).
The one numpy reference of the tests: the core's tests run it on random specs, the fixture and
converter tests on GGUF files (`NumpyModel.from_gguf`) against the logits `transformers` computed.
Slow, for tiny test models only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neuro_bitnet.engine.architecture import HParams
from neuro_bitnet.engine.gguf import GGUFFile
from neuro_bitnet.engine.quants import unpack_i2s_codes
from neuro_bitnet.engine.weights import build_core_spec

F32 = np.float32


def _embd_array(buf: object, dtype: str, rows: int, cols: int) -> np.ndarray:
    raw = np.frombuffer(buf, dtype=np.uint8)
    if dtype == "f32":
        return raw.view(np.float32).reshape(rows, cols).copy()
    if dtype == "f16":
        return raw.view(np.float16).reshape(rows, cols).astype(F32)
    bits = raw.view(np.uint16).astype(np.uint32) << 16
    return bits.view(np.float32).reshape(rows, cols).copy()


def _f32(buf: object) -> np.ndarray:
    return np.frombuffer(buf, dtype=np.float32).copy()


def _ternary(mat: dict) -> tuple[np.ndarray, np.float32]:
    rows, cols = mat["rows"], mat["cols"]
    packed = np.frombuffer(mat["data"], dtype=np.uint8)[: rows * cols // 4]
    w = unpack_i2s_codes(packed, rows * cols).reshape(rows, cols).astype(np.int64)
    return w, F32(mat["scale"])


def rmsnorm(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    """(x * (1 / sqrt(mean(x^2) + eps))) * w in float32; the mean from a float64 sum (as in C)."""
    ms = F32(np.sum(x.astype(np.float64) ** 2) / x.size)
    inv = F32(1.0) / np.sqrt(ms + F32(eps))
    return (x * inv) * w


def quantize(v: np.ndarray) -> tuple[np.ndarray, np.float32]:
    """Absmax int8 per token: s = 127 / max(max|v|, 1e-5), q = round_half_even(v * s)."""
    amax = np.max(np.abs(v))
    s = F32(127.0) / max(F32(amax), F32(1e-5))
    q = np.clip(np.round(v * s), -128, 127).astype(np.int64)
    return q, s


def ternary_matmul(w: np.ndarray, w_scale: np.float32, q: np.ndarray, s: np.float32) -> np.ndarray:
    """(W_t . q) * (w_scale / s): exact integer dot, one float32 rounding."""
    return (w @ q).astype(F32) * (w_scale / s)


def q8_head(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row int8 copy: scale = max|row| / 127, q = round(w / scale)."""
    scale = (np.max(np.abs(rows), axis=1) / F32(127.0)).astype(F32)
    safe = np.where(scale > 0, scale, F32(1.0))
    q = np.where(scale[:, None] > 0, np.round(rows / safe[:, None]), 0)
    return np.clip(q, -127, 127).astype(np.int64), scale


def q4_head(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per 128-weight group 4-bit copy: the value m of largest magnitude maps to -8, scale = m / -8,
    q = clamp(round(w / scale), -8, 7). Returns q (n_vocab, groups, 128) and scales (n_vocab, groups)."""
    g = rows.reshape(rows.shape[0], -1, 128)
    m = np.take_along_axis(g, np.argmax(np.abs(g), axis=2)[..., None], axis=2)[..., 0]
    scale = (m / F32(-8.0)).astype(F32)
    inv = np.where(scale != 0, F32(1.0) / np.where(scale != 0, scale, F32(1.0)), F32(0.0)).astype(F32)
    q = np.clip(np.round(g * inv[..., None]), -8, 7).astype(np.int64)
    return q, scale


RESCORE = 128  # the core recomputes this many best candidates of a quantized head exactly


class NumpyModel:
    """The reference model over a `_core.Model` spec dict, with its own KV cache: f32, or with
    spec["kv_cache"] == "f16" every stored key and value rounded to half precision (saturating
    at +-65504, as the core stores them)."""

    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.n_vocab, self.n_embd = spec["n_vocab"], spec["n_embd"]
        self.n_head, self.n_kv, self.hd = spec["n_head"], spec["n_head_kv"], spec["head_dim"]
        self.eps = spec["rms_eps"]
        self.embd = _embd_array(spec["tok_embd"], spec["tok_embd_type"], self.n_vocab, self.n_embd)
        if spec.get("output") is not None:
            self.out = _embd_array(spec["output"], spec["output_type"], self.n_vocab, self.n_embd)
        else:
            self.out = self.embd
        self.output_norm = _f32(spec["output_norm"])
        self.layers = []
        for layer in spec["layers"]:
            entry = {k: _f32(layer[k]) for k in ("attn_norm", "ffn_norm")}
            if spec["sub_norms"]:
                entry.update({k: _f32(layer[k]) for k in ("attn_sub_norm", "ffn_sub_norm")})
            for k in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"):
                entry[k] = _ternary(layer[k])
            w, scale = entry["ffn_down"]
            entry["ffn_down"] = (w[:, : spec["n_ff"]], scale)  # drop the zero columns of row padding
            self.layers.append(entry)
        if spec["head"] == "q8":
            self.head_q, self.head_scale = q8_head(self.out)
        elif spec["head"] == "q4":
            self.head_q, self.head_scale = q4_head(self.out)
        ctx, n_layer = spec["ctx_size"], spec["n_layer"]
        self.kcache = np.zeros((n_layer, self.n_kv, ctx, self.hd), dtype=F32)
        self.vcache = np.zeros_like(self.kcache)
        theta = np.float64(np.float32(spec["rope_theta"]))
        self.freq = theta ** (-2.0 * np.arange(self.hd // 2, dtype=np.float64) / self.hd)

    def _rope(self, v: np.ndarray, pos: int) -> np.ndarray:
        ang = pos * self.freq
        c, s = np.cos(ang).astype(F32), np.sin(ang).astype(F32)
        v = v.reshape(-1, self.hd).copy()
        half = self.hd // 2
        if self.spec["rope_neox"]:
            a, b = v[:, :half].copy(), v[:, half:].copy()
            v[:, :half], v[:, half:] = a * c - b * s, a * s + b * c
        else:
            a, b = v[:, 0::2].copy(), v[:, 1::2].copy()
            v[:, 0::2], v[:, 1::2] = a * c - b * s, a * s + b * c
        return v

    def _attention(self, il: int, q: np.ndarray, pos: int) -> np.ndarray:
        group = self.n_head // self.n_kv
        scale = F32(1.0) / np.sqrt(F32(self.hd))
        out = np.empty((self.n_head, self.hd), dtype=F32)
        for h in range(self.n_head):
            k = self.kcache[il, h // group, : pos + 1].astype(F32)
            v = self.vcache[il, h // group, : pos + 1].astype(F32)
            sc = (k @ q[h]) * scale
            e = np.exp(sc - np.max(sc))
            out[h] = (e @ v) * (F32(1.0) / np.sum(e, dtype=F32))
        return out.reshape(-1)

    def _stored(self, rows: np.ndarray) -> np.ndarray:
        """Key or value rows as the KV cache keeps them."""
        rows = rows.astype(F32)
        if self.spec.get("kv_cache", "f32") == "f16":
            rows = np.clip(rows, -65504, 65504).astype(np.float16).astype(F32)
        return rows

    def _ffn_act(self, g: np.ndarray, u: np.ndarray) -> np.ndarray:
        if self.spec["ffn_act"] == "relu2":
            r = np.maximum(g, F32(0.0))
            return (r * r) * u
        return (g / (F32(1.0) + np.exp(-g))) * u

    def _token(self, x: np.ndarray, pos: int) -> np.ndarray:
        for il, L in enumerate(self.layers):
            q8, s = quantize(rmsnorm(x, L["attn_norm"], self.eps))
            qv = ternary_matmul(*L["attn_q"], q8, s)
            kv = ternary_matmul(*L["attn_k"], q8, s)
            vv = ternary_matmul(*L["attn_v"], q8, s)
            qv = self._rope(qv, pos)
            self.kcache[il, :, pos] = self._stored(self._rope(kv, pos))
            self.vcache[il, :, pos] = self._stored(vv.reshape(self.n_kv, self.hd))
            a = self._attention(il, qv, pos)
            if self.spec["sub_norms"]:
                a = rmsnorm(a, L["attn_sub_norm"], self.eps)
            x = x + ternary_matmul(*L["attn_output"], *quantize(a))
            q8, s = quantize(rmsnorm(x, L["ffn_norm"], self.eps))
            act = self._ffn_act(ternary_matmul(*L["ffn_gate"], q8, s), ternary_matmul(*L["ffn_up"], q8, s))
            if self.spec["sub_norms"]:
                act = rmsnorm(act, L["ffn_sub_norm"], self.eps)
            x = x + ternary_matmul(*L["ffn_down"], *quantize(act))
        return x

    def _head(self, x: np.ndarray) -> np.ndarray:
        h = rmsnorm(x, self.output_norm, self.eps)
        if self.spec["head"] == "exact":
            return self.out @ h
        q, s = quantize(h)
        if self.spec["head"] == "q8":
            logits = (self.head_q @ q).astype(F32) * (self.head_scale / s)
        else:
            group_dots = (self.head_q * q.reshape(-1, 128)).sum(axis=2).astype(F32)
            logits = (group_dots * self.head_scale).sum(axis=1, dtype=F32) / s
        best = np.argpartition(-logits, min(RESCORE, len(logits)) - 1)[:RESCORE]
        logits[best] = self.out[best] @ h
        return logits

    @classmethod
    def from_gguf(cls, path: Path, ctx_size: int = 256) -> NumpyModel:
        """The reference over the weights of a GGUF file, read as the engine reads them, exact head."""
        with GGUFFile(path) as gguf:
            spec = build_core_spec(gguf, HParams.from_metadata(gguf.metadata), ctx_size=ctx_size, threads=1,
                                   head="exact")
            model = cls(spec)  # copies every array it keeps, so the file can be closed
            del spec
        return model

    def logits(self, tokens: list[int] | np.ndarray) -> np.ndarray:
        """Logits (n_tokens, n_vocab) of one sequence from position 0 (overwrites the KV cache)."""
        return self.forward(tokens, 0)

    def forward(self, tokens: list[int] | np.ndarray, n_past: int) -> np.ndarray:
        """Logits (n_tokens, n_vocab) for tokens at positions n_past.., updating the KV cache."""
        logits = []
        for i, tok in enumerate(tokens):
            x = self._token(self.embd[int(tok)].astype(F32), n_past + i)
            logits.append(self._head(x))
        return np.stack(logits)
