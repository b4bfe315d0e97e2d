"""Tensor formats: round trips with random data and odd sizes, and ggml's bit layout."""

from __future__ import annotations

import numpy as np
import pytest

from neuro_bitnet.engine import quants

RNG = np.random.default_rng(99)


def ternary(*shape: int) -> np.ndarray:
    return RNG.integers(-1, 2, size=shape).astype(np.int8)


@pytest.mark.parametrize("n", [1, 3, 127, 128, 129, 1000, 4096])
def test_i2s_round_trip(n: int) -> None:
    values = ternary(n)
    packed = quants.pack_i2s_codes(values)
    assert packed.size == -(-n // 128) * 32
    assert np.array_equal(quants.unpack_i2s_codes(packed, n), values)
    full = np.frombuffer(quants.i2s_tensor_bytes(values, 0.3), dtype=np.uint8)
    assert full.size == quants.i2s_nbytes(n)
    assert np.array_equal(quants.dequantize_i2s(full, n), values * np.float32(0.3))


def test_i2s_bit_layout() -> None:
    """Byte j of a block holds w[j], w[32+j], w[64+j], w[96+j] from the high bits down."""
    values = np.zeros(128, dtype=np.int8)
    values[5], values[37], values[69], values[101] = 1, -1, 1, -1
    packed = quants.pack_i2s_codes(values)
    assert packed[5] == (2 << 6) | (0 << 4) | (2 << 2) | 0
    assert packed[0] == 0x55  # four zeros: code 1 in each field


@pytest.mark.parametrize("rows,cols", [(1, 1), (3, 77), (5, 128), (4, 200), (2, 300), (7, 8640 // 64)])
def test_repack_rows_i2s(rows: int, cols: int) -> None:
    values = ternary(rows, cols)
    cols_padded = -(-cols // 128) * 128
    expected = np.stack([quants.pack_i2s_codes(np.pad(row, (0, cols_padded - cols))) for row in values])
    from_codes = quants.repack_rows_i2s(values, rows, cols, cols_padded)
    from_packed = quants.repack_rows_i2s(quants.pack_i2s_codes(values), rows, cols, cols_padded)
    stored = np.frombuffer(quants.i2s_tensor_bytes(values, 1.0), dtype=np.uint8)
    from_stored = quants.repack_rows_i2s(stored, rows, cols, cols_padded)
    for got in (from_codes, from_packed, from_stored):
        assert got.shape == (rows, cols_padded // 4) and got.dtype == np.uint8
        assert np.array_equal(got, expected)
    for r in range(rows):
        row = quants.unpack_i2s_codes(from_codes[r], cols_padded)
        assert np.array_equal(row[:cols], values[r]) and not row[cols:].any()
    wider = quants.repack_rows_i2s(values, rows, cols, cols_padded + 128)
    assert wider.shape == (rows, cols_padded // 4 + 32)


def test_repack_rows_i2s_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="multiple of 128"):
        quants.repack_rows_i2s(ternary(2, 10), 2, 10, 100)
    with pytest.raises(ValueError, match="expected"):
        quants.repack_rows_i2s(ternary(2, 10), 3, 10, 128)
    with pytest.raises(ValueError, match="needs"):
        quants.repack_rows_i2s(np.zeros(10, dtype=np.uint8), 4, 128, 128)


@pytest.mark.parametrize("fmt", ["tq2_0", "tq1_0"])
@pytest.mark.parametrize("n_blocks", [1, 2, 13])
def test_tq_round_trip(fmt: str, n_blocks: int) -> None:
    pack, unpack = getattr(quants, f"pack_{fmt}"), getattr(quants, f"unpack_{fmt}")
    block_bytes = {"tq2_0": 66, "tq1_0": 54}[fmt]
    values = ternary(n_blocks * 256)
    data = pack(values, 0.8125)
    assert data.dtype == np.uint8 and data.size == n_blocks * block_bytes
    got, d = unpack(data, values.size)
    assert np.array_equal(got, values) and np.all(d == np.float32(0.8125))
    dequant = getattr(quants, f"dequantize_{fmt}")(data, values.size)
    assert np.array_equal(dequant, values * np.float32(0.8125))
    back, scale = getattr(quants, f"{fmt}_to_ternary")(data, values.size)
    assert np.array_equal(back, values) and scale == 0.8125
    with pytest.raises(ValueError, match="multiple of 256"):
        pack(ternary(300), 1.0)


@pytest.mark.parametrize("fmt", ["TQ2_0", "TQ1_0", "Q8_0", "BF16"])
def test_matches_ggml_reference(fmt: str) -> None:
    """Byte-exact against llama.cpp's gguf-py numpy port of ggml-quants.c."""
    gguf = pytest.importorskip("gguf")
    qtype = gguf.GGMLQuantizationType[fmt]
    if fmt.startswith("TQ"):
        values = ternary(5, 512)
        x = values.astype(np.float32) * np.float32(0.375)
        x[0, :256] = 0  # an all-zero block: ggml stores d = 0 there
        values[0, :256] = 0
        ref = gguf.quants.quantize(x, qtype).reshape(-1)
        pack = getattr(quants, f"pack_{fmt.lower()}")
        scales = np.full(10, 0.375, dtype=np.float32)
        scales[0] = 0
        assert np.array_equal(pack(values, scales), ref)
        ours = getattr(quants, f"dequantize_{fmt.lower()}")(ref, x.size)
    else:
        x = (RNG.standard_normal((4, 96)) * 3).astype(np.float32)
        x[1, :32] = 0
        specials = np.array([0x7F800000, 0xFF800000, 0x7FC00000, 0xFFFFFFFF, 0x7F800001, 0x7F7FFFFF, 0x80000000, 1],
                            dtype=np.uint32).view(np.float32)
        if fmt == "BF16":
            x[2, : specials.size] = specials
        ref = gguf.quants.quantize(x, qtype).reshape(-1)
        if fmt == "Q8_0":
            assert np.array_equal(quants.quantize_q8_0(x), ref)
            ours = quants.dequantize_q8_0(ref, x.size)
        else:
            assert np.array_equal(quants.quantize_bf16(x), ref.view(np.uint16))
            ours = quants.dequantize_bf16(ref)
    expected = gguf.quants.dequantize(ref.reshape(x.shape[0], -1), qtype).reshape(-1)
    assert np.array_equal(ours, expected.astype(np.float32), equal_nan=True)


def test_tq1_0_packing_details() -> None:
    """Spot-check ggml's TQ1_0 base-3 layout by hand."""
    values = np.zeros(256, dtype=np.int8)
    values[0] = 1  # first trit of qs[0]: code 2 -> 2*81 + 1*(27+9+3+1)
    values[240] = -1  # first trit of qh[0]: code 0 -> 0*81 + 27+9+3
    data = quants.pack_tq1_0(values, 1.0)
    assert data[0] == -(-(2 * 81 + 40) * 256 // 243)
    assert data[48] == -(-(39) * 256 // 243)
    assert data[1] == -(-121 * 256 // 243)  # all zeros: code 1 everywhere


def test_i2s_tq2_0_lossless_repack() -> None:
    values = ternary(3 * 256)
    packed = quants.pack_i2s_codes(values)
    tq2 = quants.tq2_0_from_i2s(packed, values.size, 0.5)
    back, scale = quants.i2s_from_tq2_0(tq2, values.size)
    assert np.array_equal(back, packed) and scale == 0.5


def test_tq_to_ternary_single_scale_rules() -> None:
    values = ternary(512)
    values[:256] = 0
    # an all-zero block with d = 0 (as ggml writes it) does not count as a different scale
    data = quants.pack_tq2_0(values, np.array([0.0, 0.25], dtype=np.float32))
    _, scale = quants.tq2_0_to_ternary(data, 512)
    assert scale == 0.25
    values[:4] = 1
    mixed = quants.pack_tq1_0(values, np.array([0.5, 0.25], dtype=np.float32))
    with pytest.raises(ValueError, match="different scales"):
        quants.tq1_0_to_ternary(mixed, 512)


def test_float_formats() -> None:
    x = (RNG.standard_normal(999) * 10).astype(np.float32)
    half = x.astype(np.float16)
    assert np.array_equal(quants.dequantize_f16(half.view(np.uint8)), half.astype(np.float32))
    bf = quants.dequantize_bf16(quants.quantize_bf16(x))
    assert np.all(np.abs(bf - x) <= np.abs(x) * 2**-8)
    special = np.array([np.inf, -np.inf, 0.0, -0.0, np.nan], dtype=np.float32)
    back = quants.dequantize_bf16(quants.quantize_bf16(special))
    assert np.array_equal(back[:4], special[:4]) and np.isnan(back[4])
    q = quants.quantize_q8_0(x[:992])
    assert q.size == 31 * 34
    err = np.abs(quants.dequantize_q8_0(q, 992) - x[:992]).reshape(31, 32)
    assert np.all(err <= np.abs(x[:992]).reshape(31, 32).max(axis=1, keepdims=True) / 127)
    with pytest.raises(ValueError):
        quants.quantize_q8_0(x[:33])


def test_invalid_codes_are_rejected() -> None:
    with pytest.raises(ValueError, match="code 3"):
        quants.unpack_tq2_0(np.full(66, 0xFF, dtype=np.uint8), 256)
    with pytest.raises(ValueError, match="code 3"):
        quants.unpack_i2s_codes(np.full(32, 0xFF, dtype=np.uint8), 128)
    with pytest.raises(ValueError, match="bytes"):
        quants.unpack_tq1_0(np.zeros(53, dtype=np.uint8), 256)
