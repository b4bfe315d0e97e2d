"""Ternary weights from a checkpoint, streamed out as I2_S bytes.

Two sources:

- full-precision weights (1bitLLM, Microsoft bf16 masters): absmean quantization per tensor
  exactly as BitNet trains and as transformers' ``WeightQuant`` computes it in float32:
  ``s = 1 / max(mean|W|, 1e-5)``, ``T = clamp(round(W * s), -1, 1)``, weight = ``T / s``.
  Two passes over the tensor (the mean, then the codes), a slab of rows at a time.
- packed uint8 (transformers' ``pack_weights``): stored row ``r`` holds weight rows
  ``r + i * R/4`` in bits ``2i+1:2i`` as code ``w + 1``; one ``weight_scale`` per tensor.

I2_S (see ``engine.quants``) runs over the flattened tensor in blocks of 128 weights, so a slab
whose size is a multiple of 128 weights packs on its own and the slabs concatenate.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np

from neuro_bitnet.engine.quants import I2S_BLOCK, I2S_TRAILER, pack_i2s_codes
from neuro_bitnet.models.convert.errors import ConvertError
from neuro_bitnet.models.convert.safetensors_reader import TensorRef, read_all, read_rows, row_slabs

SLAB_BYTES = 32 << 20  # source bytes read per step
ABSMEAN_EPS = 1e-5


def absmean_inverse_scale(ref: TensorRef) -> np.float32:
    """``1 / max(mean|W|, 1e-5)`` in float32 (the mean accumulated in float64)."""
    total = 0.0
    for start, stop in row_slabs(ref, SLAB_BYTES):
        total += float(np.abs(read_rows(ref, start, stop), dtype=np.float32).sum(dtype=np.float64))
    mean = np.float32(total / ref.n_elements)
    return np.float32(1.0) / np.maximum(mean, np.float32(ABSMEAN_EPS))


def quantize_absmean(w: np.ndarray, inv_scale: np.float32) -> np.ndarray:
    """Ternary codes of float32 weights for a given inverse scale (round half to even, as torch)."""
    return np.clip(np.rint(w * inv_scale), -1, 1).astype(np.int8)


def _trailer(scale: float) -> bytes:
    out = np.zeros(I2S_TRAILER, dtype=np.uint8)
    out[:4] = np.frombuffer(np.float32(scale).tobytes(), dtype=np.uint8)
    return out.tobytes()


def _check_float_matrix(ref: TensorRef, rows: int, cols: int) -> None:
    if not ref.is_float:
        raise ConvertError(f"tensor {ref.name} is {ref.dtype}; expected full-precision weights")
    if ref.shape != (rows, cols):
        raise ConvertError(f"tensor {ref.name} has shape {ref.shape}, expected {(rows, cols)}")


def absmean_i2s(ref: TensorRef, rows: int, cols: int) -> Callable[[], Iterator[bytes]]:
    """A producer of the I2_S bytes of a full-precision tensor, quantized with absmean."""
    _check_float_matrix(ref, rows, cols)
    multiple = I2S_BLOCK // math.gcd(cols, I2S_BLOCK)  # slabs of whole 128-weight blocks

    def produce() -> Iterator[bytes]:
        inv = absmean_inverse_scale(ref)
        for start, stop in row_slabs(ref, SLAB_BYTES, multiple):
            yield pack_i2s_codes(quantize_absmean(read_rows(ref, start, stop), inv)).tobytes()
        yield _trailer(np.float32(1.0) / inv)

    return produce


def unpack_hf_ternary(packed: np.ndarray, rows: int, name: str) -> np.ndarray:
    """int8 ternary (rows, cols) from transformers' packed uint8 (ceil(rows/4), cols)."""
    if packed.dtype != np.uint8 or packed.ndim != 2:
        raise ConvertError(
            f"tensor {name}: packed ternary weights must be 2-D uint8, got {packed.dtype} {packed.shape}"
        )
    p = packed.shape[0]
    if p != -(-rows // 4):
        raise ConvertError(f"tensor {name}: {p} packed rows cannot hold {rows} weight rows")
    codes = np.concatenate([(packed >> (2 * i)) & 3 for i in range(4)], axis=0)[:rows]
    if codes.size and codes.max() > 2:
        raise ConvertError(f"tensor {name}: packed weights hold code 3, which is not a ternary value")
    return codes.astype(np.int8) - 1


def packed_ternary(weight: TensorRef, scale_ref: TensorRef, rows: int, cols: int,
                   linear_class: str) -> tuple[np.ndarray, float]:
    """(ternary values (rows, cols), per-tensor scale) of a packed transformers BitLinear."""
    if weight.shape[-1:] != (cols,):
        raise ConvertError(f"tensor {weight.name} has shape {weight.shape}, expected (*, {cols})")
    values = unpack_hf_ternary(read_all(weight, as_float32=False), rows, weight.name)
    stored = read_all(scale_ref).reshape(-1)
    if stored.size != 1:
        raise ConvertError(f"tensor {scale_ref.name}: expected one scale per tensor, got {stored.size}")
    s = float(stored[0])
    if not np.isfinite(s) or s <= 0:
        raise ConvertError(f"tensor {scale_ref.name}: invalid weight scale {s}")
    # BitLinear divides by weight_scale; AutoBitLinear (offline) multiplies by it.
    scale = float(np.float32(1.0) / np.float32(s)) if linear_class == "bitlinear" else s
    return values, scale


def float_ternary(ref: TensorRef, rows: int, cols: int) -> tuple[np.ndarray, float]:
    """(ternary values, scale) of a whole full-precision tensor (when it must be reordered)."""
    _check_float_matrix(ref, rows, cols)
    inv = absmean_inverse_scale(ref)
    return quantize_absmean(read_all(ref), inv), float(np.float32(1.0) / inv)


def values_i2s(values: np.ndarray, scale: float) -> Callable[[], Iterator[bytes]]:
    """A producer of the I2_S bytes of ternary values already in memory."""

    def produce() -> Iterator[bytes]:
        yield pack_i2s_codes(values).tobytes()
        yield _trailer(scale)

    return produce


def permute_for_interleaved_rope(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's Q/K row permutation: per head, rotate-half order -> interleaved pairs."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)
