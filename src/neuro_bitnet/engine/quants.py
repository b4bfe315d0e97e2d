"""Tensor formats, packed and unpacked with numpy (vectorised): I2_S, ggml's TQ2_0 and TQ1_0
(see their section below), Q8_0, F16 and BF16.

I2_S (Microsoft bitnet.cpp, ggml type 36): blocks of 128 weights = 32 bytes, running over the
flattened tensor. Byte j of block b holds w[128b+j] in bits 7:6, w[128b+32+j] in 5:4,
w[128b+64+j] in 3:2 and w[128b+96+j] in 1:0. Code = w + 1 (0 -> -1, 1 -> 0, 2 -> +1).
The tensor's bytes are the n/4 packed bytes, one float32 scale, then 28 bytes of padding.
"""

from __future__ import annotations

import numpy as np

I2S_BLOCK = 128
I2S_TRAILER = 32  # float32 scale + 28 bytes of padding


def i2s_nbytes(n_weights: int) -> int:
    """Size in bytes of an I2_S tensor holding ``n_weights`` weights (packed + scale + padding)."""
    return -(-n_weights // I2S_BLOCK) * (I2S_BLOCK // 4) + I2S_TRAILER


def pack_i2s_codes(ternary: np.ndarray) -> np.ndarray:
    """Pack ternary values {-1, 0, 1} (any shape, flattened in C order) into I2_S bytes.

    A final partial block is padded with zeros (code 1). Returns only the packed bytes,
    without the scale trailer.
    """
    flat = np.asarray(ternary, dtype=np.int8).reshape(-1)
    if flat.size and (flat.min() < -1 or flat.max() > 1):
        raise ValueError("I2_S packs only ternary values -1, 0, +1")
    n_blocks = -(-flat.size // I2S_BLOCK)
    codes = np.ones(n_blocks * I2S_BLOCK, dtype=np.uint8)
    codes[: flat.size] = (flat + 1).astype(np.uint8)
    codes = codes.reshape(n_blocks, 4, 32)
    packed = (codes[:, 0] << 6) | (codes[:, 1] << 4) | (codes[:, 2] << 2) | codes[:, 3]
    return packed.reshape(-1).astype(np.uint8)


def unpack_i2s_codes(packed: np.ndarray, n_weights: int) -> np.ndarray:
    """Inverse of :func:`pack_i2s_codes`: int8 ternary values, flat, ``n_weights`` long."""
    data = np.asarray(packed, dtype=np.uint8).reshape(-1, 32)
    codes = np.stack([(data >> 6) & 3, (data >> 4) & 3, (data >> 2) & 3, data & 3], axis=1)
    values = codes.reshape(-1)[:n_weights].astype(np.int8) - 1
    if n_weights and values.max(initial=-1) > 1:
        raise ValueError("I2_S data holds code 3, which is not a ternary value")
    return values


def i2s_tensor_bytes(ternary: np.ndarray, scale: float) -> bytes:
    """The full on-disk bytes of an I2_S tensor: packed weights, float32 scale, padding."""
    trailer = np.zeros(I2S_TRAILER, dtype=np.uint8)
    trailer[:4] = np.frombuffer(np.float32(scale).tobytes(), dtype=np.uint8)
    return pack_i2s_codes(ternary).tobytes() + trailer.tobytes()


# --------------------------------------------------------------------------- I2_S extras


def dequantize_i2s(data: np.ndarray, n_weights: int) -> np.ndarray:
    """Float32 weights of an I2_S tensor's full bytes (packed blocks, then the f32 scale)."""
    data = np.asarray(data, dtype=np.uint8).reshape(-1)
    packed_len = -(-n_weights // I2S_BLOCK) * (I2S_BLOCK // 4)
    if data.size < packed_len + 4:
        raise ValueError(f"I2_S data is {data.size} bytes, expected {packed_len + I2S_TRAILER}")
    scale = data[packed_len : packed_len + 4].view("<f4")[0]
    with np.errstate(invalid="ignore", over="ignore"):
        return unpack_i2s_codes(data[:packed_len], n_weights).astype(np.float32) * np.float32(scale)


def repack_rows_i2s(codes_or_packed: np.ndarray, rows: int, cols: int, cols_padded: int) -> np.ndarray:
    """Row-padded I2_S: each row packed on its own, ``cols_padded`` weights long (zeros appended).

    ``codes_or_packed`` is either ternary values -1..1 (any integer dtype but uint8, ``rows * cols``
    of them in C order) or uint8 I2_S bytes over the flattened tensor (as stored in GGUF; a
    trailing scale is ignored). Returns uint8 of shape ``(rows, cols_padded // 4)``.
    """
    if cols_padded % I2S_BLOCK or cols_padded < cols:
        raise ValueError(f"cols_padded {cols_padded} must be a multiple of {I2S_BLOCK} and >= cols {cols}")
    src = np.asarray(codes_or_packed)
    n = rows * cols
    if src.dtype == np.uint8:
        packed_len = -(-n // I2S_BLOCK) * (I2S_BLOCK // 4)
        flat = src.reshape(-1)
        if flat.size < packed_len:
            raise ValueError(f"packed I2_S data is {flat.size} bytes, {rows}x{cols} needs {packed_len}")
        if cols == cols_padded:
            return np.ascontiguousarray(flat[:packed_len]).reshape(rows, cols_padded // 4)
        values = unpack_i2s_codes(flat[:packed_len], n)
    else:
        if src.size != n:
            raise ValueError(f"got {src.size} ternary values, expected {rows}x{cols}")
        values = src.reshape(-1)
    padded = np.zeros((rows, cols_padded), dtype=np.int8)
    padded[:, :cols] = values.reshape(rows, cols)
    return pack_i2s_codes(padded).reshape(rows, cols_padded // 4)


# --------------------------------------------------------------------------- TQ2_0 / TQ1_0
#
# ggml's ternary types: 256 weights a block, code = w + 1, one fp16 scale d per block at the end.
# TQ2_0 (66 bytes): qs[64]; byte qs[32h+m] holds w[128h+32n+m] in bits 2n+1:2n (n = 0..3).
# TQ1_0 (54 bytes): qs[48], qh[4], d. Base-3: a byte holds 5 (qh: 4) trits, the first one most
# significant, stored as ceil(value * 256 / 243) so that trit n = ((q * 3^n) mod 256) * 3 >> 8.
# qs[0:32] covers w[0:160] (trit n of byte m is w[32n+m]), qs[32:48] covers w[160:240] (w[160+16n+m]),
# qh[0:4] covers w[240:256] (trit n of byte m is w[240+4n+m]).

QK_K = 256
TQ2_0_BYTES = 66
TQ1_0_BYTES = 54
_POW3 = np.array([1, 3, 9, 27, 81], dtype=np.uint16)


def _ternary_codes(ternary: np.ndarray, fmt: str) -> np.ndarray:
    flat = np.asarray(ternary).reshape(-1)
    if flat.size % QK_K:
        raise ValueError(f"{fmt} needs a multiple of {QK_K} weights, got {flat.size}")
    if flat.size and (flat.min() < -1 or flat.max() > 1):
        raise ValueError(f"{fmt} packs only ternary values -1, 0, +1")
    return (flat.astype(np.int8) + 1).astype(np.uint8).reshape(-1, QK_K)


def _scale_bytes(n_blocks: int, scale: float | np.ndarray) -> np.ndarray:
    d = np.broadcast_to(np.asarray(scale, dtype=np.float16).reshape(-1), (n_blocks,))
    return np.ascontiguousarray(d).view(np.uint8).reshape(n_blocks, 2)


def _blocks(data: np.ndarray, n_weights: int, block_bytes: int, fmt: str) -> np.ndarray:
    if n_weights % QK_K:
        raise ValueError(f"{fmt} holds a multiple of {QK_K} weights, got {n_weights}")
    n_blocks = n_weights // QK_K
    flat = np.asarray(data, dtype=np.uint8).reshape(-1)
    if flat.size < n_blocks * block_bytes:
        raise ValueError(f"{fmt} data is {flat.size} bytes, {n_weights} weights need {n_blocks * block_bytes}")
    return flat[: n_blocks * block_bytes].reshape(n_blocks, block_bytes)


def _block_scales(blocks: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(blocks[:, -2:]).view("<f2").reshape(-1).astype(np.float32)


def pack_tq2_0(ternary: np.ndarray, scale: float | np.ndarray) -> np.ndarray:
    """TQ2_0 bytes of ternary values (C order, a multiple of 256) with ``scale`` as every block's d
    (or one scale per block)."""
    codes = _ternary_codes(ternary, "TQ2_0").reshape(-1, 2, 4, 32)
    qs = codes[:, :, 0] | (codes[:, :, 1] << 2) | (codes[:, :, 2] << 4) | (codes[:, :, 3] << 6)
    n_blocks = codes.shape[0]
    return np.concatenate([qs.reshape(n_blocks, 64), _scale_bytes(n_blocks, scale)], axis=1).reshape(-1)


def unpack_tq2_0(data: np.ndarray, n_weights: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`pack_tq2_0`: (int8 ternary values, float32 d of each block)."""
    blocks = _blocks(data, n_weights, TQ2_0_BYTES, "TQ2_0")
    qs = blocks[:, :64].reshape(-1, 2, 1, 32)
    codes = (qs >> np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)) & 3
    values = codes.reshape(-1).astype(np.int8) - 1
    if values.size and values.max() > 1:
        raise ValueError("TQ2_0 data holds code 3, which is not a ternary value")
    return values, _block_scales(blocks)


def _encode_trits(codes: np.ndarray) -> np.ndarray:
    """codes (..., n_trits, width) -> bytes (..., width), first trit most significant (3^4)."""
    n_trits = codes.shape[-2]
    weights = np.array([81, 27, 9, 3, 1][:n_trits], dtype=np.uint16).reshape(n_trits, 1)
    value = (codes.astype(np.uint16) * weights).sum(axis=-2)
    return ((value * 256 + 242) // 243).astype(np.uint8)


def _decode_trits(q: np.ndarray, n_trits: int) -> np.ndarray:
    """bytes (..., width) -> codes (..., n_trits, width)."""
    shifted = (q[..., None, :].astype(np.uint16) * _POW3[:n_trits].reshape(n_trits, 1)) & 0xFF
    return ((shifted * 3) >> 8).astype(np.uint8)


def pack_tq1_0(ternary: np.ndarray, scale: float | np.ndarray) -> np.ndarray:
    """TQ1_0 bytes of ternary values (C order, a multiple of 256), ``scale`` as every block's d."""
    codes = _ternary_codes(ternary, "TQ1_0")
    n_blocks = codes.shape[0]
    qs0 = _encode_trits(codes[:, :160].reshape(n_blocks, 5, 32))
    qs1 = _encode_trits(codes[:, 160:240].reshape(n_blocks, 5, 16))
    qh = _encode_trits(codes[:, 240:].reshape(n_blocks, 4, 4))  # 4 trits, top-aligned
    return np.concatenate([qs0, qs1, qh, _scale_bytes(n_blocks, scale)], axis=1).reshape(-1)


def unpack_tq1_0(data: np.ndarray, n_weights: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`pack_tq1_0`: (int8 ternary values, float32 d of each block)."""
    blocks = _blocks(data, n_weights, TQ1_0_BYTES, "TQ1_0")
    n_blocks = blocks.shape[0]
    parts = [
        _decode_trits(blocks[:, 0:32], 5).reshape(n_blocks, 160),
        _decode_trits(blocks[:, 32:48], 5).reshape(n_blocks, 80),
        _decode_trits(blocks[:, 48:52], 4).reshape(n_blocks, 16),
    ]
    values = np.concatenate(parts, axis=1).reshape(-1).astype(np.int8) - 1  # trits are 0..2 by design
    return values, _block_scales(blocks)


def dequantize_tq2_0(data: np.ndarray, n_weights: int) -> np.ndarray:
    """Float32 weights of TQ2_0 data (per-block scales honoured)."""
    values, d = unpack_tq2_0(data, n_weights)
    with np.errstate(invalid="ignore", over="ignore"):
        return (values.reshape(-1, QK_K).astype(np.float32) * d[:, None]).reshape(-1)


def dequantize_tq1_0(data: np.ndarray, n_weights: int) -> np.ndarray:
    """Float32 weights of TQ1_0 data (per-block scales honoured)."""
    values, d = unpack_tq1_0(data, n_weights)
    with np.errstate(invalid="ignore", over="ignore"):
        return (values.reshape(-1, QK_K).astype(np.float32) * d[:, None]).reshape(-1)


def _single_scale(values: np.ndarray, d: np.ndarray, fmt: str) -> float:
    """The one scale shared by every block that holds a nonzero weight."""
    used = d[np.any(values.reshape(-1, QK_K) != 0, axis=1)]
    if used.size == 0:
        return float(d.max(initial=0.0))
    if np.any(used != used[0]):
        raise ValueError(f"{fmt} blocks have different scales; not one ternary scale per tensor")
    return float(used[0])


def tq2_0_to_ternary(data: np.ndarray, n_weights: int) -> tuple[np.ndarray, float]:
    """TQ2_0 -> (int8 ternary values, the tensor's single scale); ValueError if blocks disagree."""
    values, d = unpack_tq2_0(data, n_weights)
    return values, _single_scale(values, d, "TQ2_0")


def tq1_0_to_ternary(data: np.ndarray, n_weights: int) -> tuple[np.ndarray, float]:
    """TQ1_0 -> (int8 ternary values, the tensor's single scale); ValueError if blocks disagree."""
    values, d = unpack_tq1_0(data, n_weights)
    return values, _single_scale(values, d, "TQ1_0")


def i2s_from_tq2_0(data: np.ndarray, n_weights: int) -> tuple[np.ndarray, float]:
    """Lossless repack TQ2_0 -> (I2_S packed bytes, scale)."""
    values, scale = tq2_0_to_ternary(data, n_weights)
    return pack_i2s_codes(values), scale


def tq2_0_from_i2s(packed: np.ndarray, n_weights: int, scale: float) -> np.ndarray:
    """Lossless repack I2_S packed bytes -> TQ2_0 bytes (scale rounded to fp16 in every block)."""
    return pack_tq2_0(unpack_i2s_codes(packed, n_weights), scale)


# --------------------------------------------------------------------------- float formats


def dequantize_f16(data: np.ndarray) -> np.ndarray:
    """Float32 values of little-endian float16 bytes (or a float16 array)."""
    return np.asarray(data).reshape(-1).view("<f2").astype(np.float32)


def dequantize_bf16(data: np.ndarray) -> np.ndarray:
    """Float32 values of bfloat16 bytes or uint16 bits."""
    bits = np.asarray(data).reshape(-1).view("<u2")
    return (bits.astype(np.uint32) << 16).view(np.float32)


def quantize_bf16(values: np.ndarray) -> np.ndarray:
    """bfloat16 bits (uint16) of float values, round-to-nearest-even, NaN kept quiet (as ggml)."""
    bits = np.ascontiguousarray(values, dtype=np.float32).reshape(-1).view(np.uint32)
    nan = (bits & 0x7FFFFFFF) > 0x7F800000
    # uint32 cannot overflow here except in NaN lanes, which are replaced below.
    rounded = ((bits + (np.uint32(0x7FFF) + ((bits >> 16) & 1))) >> 16).astype(np.uint16)
    rounded[nan] = ((bits[nan] >> 16) | 64).astype(np.uint16)
    return rounded


Q8_0_BLOCK = 32
Q8_0_BYTES = 34


def _roundf(x: np.ndarray) -> np.ndarray:
    """C roundf: halves away from zero."""
    return np.sign(x) * np.floor(np.abs(x) + np.float32(0.5))


def quantize_q8_0(values: np.ndarray) -> np.ndarray:
    """Q8_0 bytes (per 32 values: fp16 d = absmax/127, then 32 int8) as ggml's reference does."""
    x = np.asarray(values, dtype=np.float32).reshape(-1)
    if x.size % Q8_0_BLOCK:
        raise ValueError(f"Q8_0 needs a multiple of {Q8_0_BLOCK} values, got {x.size}")
    x = x.reshape(-1, Q8_0_BLOCK)
    d = np.abs(x).max(axis=1, keepdims=True) / np.float32(127)
    with np.errstate(divide="ignore"):
        inv = np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)
    q = _roundf(x * inv).astype(np.int8)
    d16 = d.astype(np.float16).view(np.uint8)
    return np.concatenate([d16, q.view(np.uint8)], axis=1).reshape(-1)


def dequantize_q8_0(data: np.ndarray, n_values: int) -> np.ndarray:
    """Float32 values of Q8_0 data."""
    if n_values % Q8_0_BLOCK:
        raise ValueError(f"Q8_0 holds a multiple of {Q8_0_BLOCK} values, got {n_values}")
    n_blocks = n_values // Q8_0_BLOCK
    blocks = np.asarray(data, dtype=np.uint8).reshape(-1)[: n_blocks * Q8_0_BYTES].reshape(n_blocks, Q8_0_BYTES)
    d = np.ascontiguousarray(blocks[:, :2]).view("<f2").astype(np.float32)
    q = np.ascontiguousarray(blocks[:, 2:]).view(np.int8).astype(np.float32)
    with np.errstate(invalid="ignore", over="ignore"):  # inf/nan scales stay inf/nan
        return (q * d).reshape(-1)
