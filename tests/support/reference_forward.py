"""A plain numpy W1.58A8 forward pass over a GGUF file, for checking converted files exactly.

Independent of the engine: float32 throughout, per-token absmax int8 activations (round half to
even, as torch), ternary weights dequantized from the file. Slow; tiny models only.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neuro_bitnet.engine.gguf import GGUFFile

F32 = np.float32


class ReferenceModel:
    """Straightforward W1.58A8 forward pass over the tensors of one GGUF file (float32)."""

    def __init__(self, path: Path) -> None:
        with GGUFFile(path) as g:
            meta = g.metadata
            self.w = {n: g.dequantize(n).reshape(g.info(n).shape).astype(F32) for n in g.tensors}
        arch = meta["general.architecture"]
        get = lambda k: meta[f"{arch}.{k}"]  # noqa: E731
        self.n_layer, self.n_head = get("block_count"), get("attention.head_count")
        self.n_kv, self.hd = get("attention.head_count_kv"), get("rope.dimension_count")
        self.eps, self.theta = F32(get("attention.layer_norm_rms_epsilon")), get("rope.freq_base")
        self.neox = meta["neuro_bitnet.rope_style"] == "neox"
        self.relu2 = arch == "bitnet-b1.58"
        self.sub = "blk.0.attn_sub_norm.weight" in self.w

    def _norm(self, x: np.ndarray, name: str) -> np.ndarray:
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + self.eps) * self.w[name]

    def _lin(self, x: np.ndarray, name: str) -> np.ndarray:
        """Per-token absmax int8 activations (round half to even, as torch), times the float weights.
        einsum, not BLAS: multithreaded BLAS crawls on a busy 2-core machine."""
        s = F32(127) / np.maximum(np.abs(x).max(-1, keepdims=True), F32(1e-5))
        return np.einsum("tk,nk->tn", np.clip(np.round(x * s), -128, 127) / s, self.w[name])

    def _rope(self, x: np.ndarray) -> np.ndarray:
        t, h, d = x.shape
        inv = 1.0 / (self.theta ** (np.arange(0, d, 2, dtype=np.float64) / d))
        ang = np.arange(t, dtype=np.float64)[:, None] * inv[None, :]
        cos, sin = np.cos(ang).astype(F32)[:, None, :], np.sin(ang).astype(F32)[:, None, :]
        if self.neox:
            a, b = x[..., : d // 2], x[..., d // 2 :]
            return np.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2], out[..., 1::2] = a * cos - b * sin, a * sin + b * cos
        return out

    def logits(self, tokens: list[int] | np.ndarray) -> np.ndarray:
        """Logits (tokens, vocab) for one sequence, every position."""
        x = self.w["token_embd.weight"][np.asarray(tokens)]
        t = x.shape[0]
        mask = np.triu(np.full((t, t), -np.inf, dtype=F32), 1)
        for i in range(self.n_layer):
            p = f"blk.{i}."
            h = self._norm(x, p + "attn_norm.weight")
            q = self._rope(self._lin(h, p + "attn_q.weight").reshape(t, self.n_head, self.hd))
            k = self._rope(self._lin(h, p + "attn_k.weight").reshape(t, self.n_kv, self.hd))
            v = self._lin(h, p + "attn_v.weight").reshape(t, self.n_kv, self.hd)
            rep = self.n_head // self.n_kv
            k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
            att = np.einsum("thd,shd->hts", q, k) / F32(np.sqrt(self.hd)) + mask
            att = np.exp(att - att.max(-1, keepdims=True))
            att /= att.sum(-1, keepdims=True)
            o = np.einsum("hts,shd->thd", att, v).reshape(t, -1)
            if self.sub:
                o = self._norm(o, p + "attn_sub_norm.weight")
            x = x + self._lin(o, p + "attn_output.weight")
            h = self._norm(x, p + "ffn_norm.weight")
            g, u = self._lin(h, p + "ffn_gate.weight"), self._lin(h, p + "ffn_up.weight")
            a = (np.maximum(g, 0) ** 2 if self.relu2 else g / (1 + np.exp(-g))) * u
            if self.sub:
                a = self._norm(a, p + "ffn_sub_norm.weight")
            x = x + self._lin(a, p + "ffn_down.weight")
        head = self.w.get("output.weight", self.w["token_embd.weight"])
        return np.einsum("tk,nk->tn", self._norm(x, "output_norm.weight"), head)  # no BLAS: see _lin
