"""Turn the tensors of a GGUF file into the weight spec the C core runs (zero-copy when possible).

The official I2_S tensors whose rows are a whole number of 128-weight blocks are handed to the core
as views of the memory map. Anything else (TQ1_0/TQ2_0 files, rows that need padding) is repacked
once, in memory, into row-padded I2_S.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from neuro_bitnet.engine.architecture import HParams, ternary_shapes
from neuro_bitnet.engine.gguf import GGMLType, GGUFFile
from neuro_bitnet.engine.quants import I2S_BLOCK, pack_i2s_codes, unpack_i2s_codes
from neuro_bitnet.errors import EngineError

TERNARY_NAMES = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
FLOAT_TYPES = {GGMLType.F32: "f32", GGMLType.F16: "f16", GGMLType.BF16: "bf16"}
TERNARY_TYPES = (GGMLType.I2_S, GGMLType.TQ2_0, GGMLType.TQ1_0)


def _tensor(gguf: GGUFFile, name: str):
    info = gguf.tensors.get(name)
    if info is None:
        raise EngineError(f"{gguf.path.name}: missing tensor {name}")
    return info


def _check_shape(name: str, shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
    if tuple(shape) != tuple(expected):
        raise EngineError(f"tensor {name} has shape {tuple(shape)}, expected {tuple(expected)}")


def padded_cols(cols: int) -> int:
    """Row length after padding to whole I2_S blocks."""
    return -(-cols // I2S_BLOCK) * I2S_BLOCK


def ternary_matrix(gguf: GGUFFile, name: str, rows: int, cols: int) -> dict[str, Any]:
    """One ternary matrix as the core wants it: row-padded I2_S bytes plus the weight scale."""
    info = _tensor(gguf, name)
    _check_shape(name, info.shape, (rows, cols))
    cols_p = padded_cols(cols)
    if info.ggml_type == GGMLType.I2_S:
        packed, scale = gguf.ternary(name)
        if cols_p == cols:
            return {"data": packed, "scale": float(scale), "rows": rows, "cols": cols}
        values = unpack_i2s_codes(packed, rows * cols).reshape(rows, cols)
    elif info.ggml_type in (GGMLType.TQ2_0, GGMLType.TQ1_0):
        dense = gguf.dequantize(name).reshape(rows, cols)
        scale = float(np.abs(dense).max())
        values = np.zeros((rows, cols), dtype=np.int8) if scale == 0 else np.rint(dense / scale).astype(np.int8)
        if not np.allclose(values * scale, dense, rtol=1e-2, atol=1e-3 * max(scale, 1e-12)):
            raise EngineError(f"tensor {name} is not one ternary scale times {{-1,0,1}} (per-block scales differ)")
    else:
        raise EngineError(
            f"tensor {name} has type {info.ggml_type.name}; the engine runs ternary weights "
            "(I2_S, TQ2_0, TQ1_0)"
        )
    padded = np.zeros((rows, cols_p), dtype=np.int8)
    padded[:, :cols] = values
    return {"data": pack_i2s_codes(padded), "scale": float(scale), "rows": rows, "cols": cols_p}


def float_vector(gguf: GGUFFile, name: str, length: int) -> np.ndarray:
    """A norm weight as a float32 vector (zero-copy for F32 tensors)."""
    info = _tensor(gguf, name)
    if int(np.prod(info.shape)) != length:
        raise EngineError(f"tensor {name} has {int(np.prod(info.shape))} values, expected {length}")
    if info.ggml_type == GGMLType.F32:
        vec = gguf.array(name).reshape(-1)
    else:
        vec = gguf.dequantize(name).reshape(-1).astype(np.float32)
    return vec


def embedding_matrix(gguf: GGUFFile, name: str, hp: HParams) -> tuple[Any, str]:
    """The embedding (or head) matrix as a buffer and its type name for the core."""
    info = _tensor(gguf, name)
    _check_shape(name, info.shape, (hp.n_vocab, hp.n_embd))
    if info.ggml_type in FLOAT_TYPES:
        return gguf.raw(name), FLOAT_TYPES[info.ggml_type]
    try:
        return gguf.dequantize(name).astype(np.float16), "f16"
    except EngineError as exc:
        raise EngineError(f"tensor {name}: {exc}") from None


def build_core_spec(gguf: GGUFFile, hp: HParams, *, ctx_size: int, threads: int, head: str) -> dict[str, Any]:
    """Everything `_core.Model` needs, checked against the hyper-parameters."""
    shapes = ternary_shapes(hp.n_embd, hp.n_ff, hp.n_head, hp.n_head_kv, hp.head_dim)
    behaviour = hp.behaviour
    layers = []
    for i in range(hp.n_layer):
        layer: dict[str, Any] = {
            "attn_norm": float_vector(gguf, f"blk.{i}.attn_norm.weight", hp.n_embd),
            "ffn_norm": float_vector(gguf, f"blk.{i}.ffn_norm.weight", hp.n_embd),
        }
        if behaviour.sub_norms:
            layer["attn_sub_norm"] = float_vector(gguf, f"blk.{i}.attn_sub_norm.weight", hp.n_head * hp.head_dim)
        for short in TERNARY_NAMES:
            rows, cols = shapes[short]
            layer[short] = ternary_matrix(gguf, f"blk.{i}.{short}.weight", rows, cols)
        if behaviour.sub_norms:
            layer["ffn_sub_norm"] = float_vector(gguf, f"blk.{i}.ffn_sub_norm.weight", hp.n_ff)
        layers.append(layer)

    tok_embd, tok_type = embedding_matrix(gguf, "token_embd.weight", hp)
    spec: dict[str, Any] = {
        "n_vocab": hp.n_vocab,
        "n_embd": hp.n_embd,
        "n_ff": hp.n_ff,  # ffn_down's cols may be padded past n_ff; the core zero-fills the tail
        "n_head": hp.n_head,
        "n_head_kv": hp.n_head_kv,
        "head_dim": hp.head_dim,
        "n_layer": hp.n_layer,
        "ctx_size": ctx_size,
        "n_threads": threads,
        "rms_eps": hp.rms_eps,
        "rope_theta": hp.rope_theta,
        "rope_neox": behaviour.rope_neox,
        "sub_norms": behaviour.sub_norms,
        "ffn_act": behaviour.ffn_act,
        "tok_embd": tok_embd,
        "tok_embd_type": tok_type,
        "head": head,
        "output_norm": float_vector(gguf, "output_norm.weight", hp.n_embd),
        "layers": layers,
    }
    if "output.weight" in gguf.tensors:
        spec["output"], spec["output_type"] = embedding_matrix(gguf, "output.weight", hp)
    return spec

