"""Ternary weight layouts, packed and unpacked with numpy.

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
