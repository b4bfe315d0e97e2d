"""GGUF reader and writer: round trips, cross-checks with the reference gguf-py, and bad files."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest

from neuro_bitnet.engine import quants
from neuro_bitnet.engine.gguf import GGMLType, GGUFFile, GGUFValueType
from neuro_bitnet.engine.gguf_writer import GGUFWriter
from neuro_bitnet.errors import EngineError

RNG = np.random.default_rng(1234)


# --------------------------------------------------------------------------- raw byte builders
def gstr(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def kv_u32(key: str, value: int) -> bytes:
    return gstr(key) + struct.pack("<II", GGUFValueType.UINT32, value)


def tensor_info(name: str, ne: list[int], type_id: int, offset: int) -> bytes:
    return gstr(name) + struct.pack(f"<I{len(ne)}QIQ", len(ne), *ne, type_id, offset)


def raw_gguf(kvs: list[bytes], infos: list[bytes], data: bytes = b"", *, version: int = 3,
             n_tensors: int | None = None, n_kv: int | None = None, align: int = 32) -> bytes:
    head = b"GGUF" + struct.pack(
        "<IQQ", version, len(infos) if n_tensors is None else n_tensors, len(kvs) if n_kv is None else n_kv
    )
    head += b"".join(kvs) + b"".join(infos)
    head += bytes(-len(head) % align)
    return head + data


def write(tmp_path: Path, blob: bytes, name: str = "m.gguf") -> Path:
    path = tmp_path / name
    path.write_bytes(blob)
    return path


def load_error(path: Path) -> str:
    with pytest.raises(EngineError) as info:
        GGUFFile(path)
    return str(info.value)


# --------------------------------------------------------------------------- round trips
def test_metadata_round_trip_and_type_inference(tmp_path: Path) -> None:
    path = tmp_path / "meta.gguf"
    w = GGUFWriter(path, "bitnet-b1.58")
    w.add("u32", 7)
    w.add("i32", -7)
    w.add("u64", 2**40)
    w.add("i64", -(2**40))
    w.add("f32", 0.25)
    w.add("flag", False)
    w.add("text", "héllo ✓")
    w.add("strs", ["a", "", "ü"])
    w.add("ints", [1, -2, 3])
    w.add("floats", [0.5, 2.0])
    w.add("bools", [True, False])
    w.add("empty", [])
    w.add("wide", [-1, 2**63 - 1])
    w.add("huge", [2**64 - 1])
    w.add("np_u16", np.array([1, 2, 65535], dtype=np.uint16))
    explicit = {
        GGUFValueType.UINT8: 200, GGUFValueType.INT8: -100, GGUFValueType.UINT16: 60000,
        GGUFValueType.INT16: -30000, GGUFValueType.UINT32: 1, GGUFValueType.INT32: 1,
        GGUFValueType.UINT64: 1, GGUFValueType.INT64: -1, GGUFValueType.FLOAT32: 1.5,
        GGUFValueType.FLOAT64: 1e300, GGUFValueType.BOOL: True, GGUFValueType.STRING: "s",
    }
    for vtype, value in explicit.items():
        w.add(f"explicit.{vtype.name}", value, vtype)
    w.add("explicit.f64_list", [1e300, -1.0], GGUFValueType.FLOAT64)
    w.write()

    with GGUFFile(path) as g:
        m = g.metadata
        assert g.version == 3 and g.alignment == 32 and g.tensors == {}
        assert m["general.architecture"] == "bitnet-b1.58"
        assert list(m)[0] == "general.architecture"
        assert (m["u32"], m["i32"], m["u64"], m["i64"]) == (7, -7, 2**40, -(2**40))
        assert (m["f32"], m["flag"], m["text"]) == (0.25, False, "héllo ✓")
        assert m["strs"] == ["a", "", "ü"] and m["ints"] == [1, -2, 3]
        assert m["floats"] == [0.5, 2.0] and m["bools"] == [True, False] and m["empty"] == []
        assert m["np_u16"] == [1, 2, 65535]
        assert m["wide"] == [-1, 2**63 - 1] and m["huge"] == [2**64 - 1]
        for vtype, value in explicit.items():
            assert m[f"explicit.{vtype.name}"] == value
        assert m["explicit.f64_list"] == [1e300, -1.0]


def test_written_value_types_are_the_documented_ones(tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "types.gguf"
    w = GGUFWriter(path, "llama")
    for key, value in {"u": 1, "neg": -1, "big": 2**33, "negbig": -(2**33), "f": 1.0, "b": True,
                       "s": "x", "ls": ["a"], "li": [1], "lf": [1.0]}.items():
        w.add(key, value)
    w.write()
    fields = gguf.GGUFReader(path).fields
    V = gguf.GGUFValueType
    expect = {"u": [V.UINT32], "neg": [V.INT32], "big": [V.UINT64], "negbig": [V.INT64], "f": [V.FLOAT32],
              "b": [V.BOOL], "s": [V.STRING], "ls": [V.ARRAY, V.STRING], "li": [V.ARRAY, V.INT32],
              "lf": [V.ARRAY, V.FLOAT32]}
    for key, types in expect.items():
        assert fields[key].types == types, key


def make_model(path: Path, alignment: int = 32) -> dict[str, np.ndarray]:
    """A small file with one tensor of each writable type; returns the source arrays."""
    src = {
        "f32": RNG.standard_normal((3, 5)).astype(np.float32),
        "f16": RNG.standard_normal((7,)).astype(np.float32),
        "bf16": RNG.standard_normal((2, 3, 4)).astype(np.float32),
        "q8": RNG.standard_normal((3, 64)).astype(np.float32),
        "i2s": RNG.integers(-1, 2, size=(6, 256)).astype(np.int8),
        "i2s_odd": RNG.integers(-1, 2, size=(5, 77)).astype(np.int8),
        "tq2": RNG.integers(-1, 2, size=(3, 512)).astype(np.int8),
        "tq1": RNG.integers(-1, 2, size=(2, 768)).astype(np.int8),
    }
    w = GGUFWriter(path, "bitnet-b1.58", alignment=alignment)
    w.add("tokenizer.ggml.tokens", [f"t{i}" for i in range(100)])
    w.add_tensor("f32", src["f32"])
    w.add_tensor("f16", src["f16"], GGMLType.F16)
    w.add_tensor("bf16", src["bf16"], GGMLType.BF16)
    w.add_tensor("q8", src["q8"], GGMLType.Q8_0)
    w.add_ternary("i2s", src["i2s"], 0.75)
    w.add_ternary("i2s_odd", src["i2s_odd"], 1.5)
    w.add_ternary("tq2", src["tq2"], 0.125, GGMLType.TQ2_0)
    w.add_ternary("tq1", src["tq1"], 2.0, GGMLType.TQ1_0)
    w.write()
    return src


@pytest.mark.parametrize("alignment", [32, 64])
def test_tensor_round_trip(tmp_path: Path, alignment: int) -> None:
    path = tmp_path / "model.gguf"
    src = make_model(path, alignment)
    with GGUFFile(path) as g:
        assert g.alignment == alignment
        assert list(g.tensors) == list(src)
        for name, arr in src.items():
            info = g.tensors[name]
            assert info.shape == arr.shape and info.offset % alignment == 0
            assert len(g.raw(name)) == info.nbytes
        assert g.tensors["i2s"].nbytes == 6 * 256 // 4 + 32
        assert g.tensors["tq1"].nbytes == 6 * 54 and g.tensors["tq2"].nbytes == 6 * 66
        assert np.array_equal(g.array("f32"), src["f32"])
        assert np.array_equal(g.array("f16"), src["f16"].astype(np.float16))
        bf16 = g.array("bf16")
        assert bf16.dtype == np.uint16 and bf16.shape == (2, 3, 4)
        bf16 = quants.dequantize_bf16(quants.quantize_bf16(src["bf16"])).reshape(2, 3, 4)
        assert np.array_equal(g.dequantize("bf16"), bf16)
        assert np.abs(g.dequantize("bf16") - src["bf16"]).max() < 0.02
        assert g.array("q8").shape == (3, 2 * 34)
        assert np.abs(g.dequantize("q8") - src["q8"]).max() < 0.05
        for name, scale in [("i2s", 0.75), ("i2s_odd", 1.5), ("tq2", 0.125), ("tq1", 2.0)]:
            assert np.array_equal(g.dequantize(name), src[name] * np.float32(scale)), name
        packed, scale = g.ternary("i2s")
        assert scale == 0.75 and packed.dtype == np.uint8 and packed.shape == (6 * 256 // 4,)
        assert np.array_equal(quants.unpack_i2s_codes(packed, 6 * 256), src["i2s"].reshape(-1))
        packed_odd, _ = g.ternary("i2s_odd")
        assert packed_odd.size == -(-5 * 77 // 128) * 32
        with pytest.raises(EngineError, match="not I2_S"):
            g.ternary("tq2")
        with pytest.raises(EngineError, match="no tensor named"):
            g.raw("missing")


def test_views_are_zero_copy_and_read_only(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    make_model(path)
    g = GGUFFile(path)
    arr = g.array("f32")
    packed, _ = g.ternary("i2s")
    raw = g.raw("f16")
    assert not arr.flags.owndata and not arr.flags.writeable
    assert not packed.flags.owndata and raw.readonly
    g.close()  # views outlive close(): the map stays alive until they go
    assert arr.shape == (3, 5) and float(arr.sum()) == float(arr.sum())
    with pytest.raises(EngineError, match="closed"):
        g.array("f32")
    del arr, packed, raw


def test_gguf_py_reads_our_file(tmp_path: Path) -> None:
    """The reference reader (llama.cpp's gguf-py) accepts our standard-type files."""
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "std.gguf"
    f32 = RNG.standard_normal((4, 32)).astype(np.float32)
    tern = RNG.integers(-1, 2, size=(2, 256)).astype(np.int8)
    w = GGUFWriter(path, "llama")
    w.add("llama.block_count", 2)
    w.add("tokenizer.ggml.tokens", ["<s>", "</s>", "hi"])
    w.add_tensor("a", f32)
    w.add_tensor("b", f32, GGMLType.F16)
    w.add_tensor("c", f32, GGMLType.Q8_0)
    w.add_ternary("d", tern, 0.5, GGMLType.TQ2_0)
    w.add_ternary("e", tern, 0.5, GGMLType.TQ1_0)
    w.write()
    r = gguf.GGUFReader(path)
    assert r.fields["general.architecture"].contents() == "llama"
    assert r.fields["llama.block_count"].contents() == 2
    assert r.fields["tokenizer.ggml.tokens"].contents() == ["<s>", "</s>", "hi"]
    tensors = {t.name: t for t in r.tensors}
    assert [int(x) for x in tensors["a"].shape] == [32, 4]  # ne order: ne[0] = cols
    assert np.array_equal(np.asarray(tensors["a"].data), f32)
    with GGUFFile(path) as g:
        for name in "abcde":
            t = tensors[name]
            assert g.tensors[name].offset == t.data_offset and g.tensors[name].nbytes == t.n_bytes
            ref = gguf.quants.dequantize(np.asarray(t.data), t.tensor_type).reshape(g.tensors[name].shape)
            assert np.array_equal(g.dequantize(name), ref.astype(np.float32)), name


def test_we_read_gguf_py_files(tmp_path: Path) -> None:
    gguf = pytest.importorskip("gguf")
    path = tmp_path / "ref.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint32("llama.context_length", 4096)
    w.add_float32("llama.rope.freq_base", 500000.0)
    w.add_array("tokenizer.ggml.scores", [0.0, -1.5])
    w.add_array("tokenizer.ggml.tokens", ["x", "y"])
    w.add_string("tokenizer.ggml.model", "gpt2")
    f32 = RNG.standard_normal((3, 256)).astype(np.float32)
    tern = (RNG.integers(-1, 2, size=(2, 512)) * 0.5).astype(np.float32)
    w.add_tensor("f32", f32)
    w.add_tensor("f16", f32.astype(np.float16))
    for qtype in ("Q8_0", "TQ1_0", "TQ2_0", "BF16"):
        t = gguf.GGMLQuantizationType[qtype]
        src = tern if qtype.startswith("TQ") else f32
        w.add_tensor(qtype.lower(), gguf.quants.quantize(src, t), raw_dtype=t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with GGUFFile(path) as g:
        assert g.metadata["llama.context_length"] == 4096
        assert g.metadata["tokenizer.ggml.scores"] == [0.0, -1.5]
        assert g.metadata["tokenizer.ggml.tokens"] == ["x", "y"]
        assert np.array_equal(g.array("f32"), f32)
        assert np.array_equal(g.dequantize("f16"), f32.astype(np.float16).astype(np.float32))
        assert np.array_equal(g.dequantize("tq1_0"), tern) and np.array_equal(g.dequantize("tq2_0"), tern)
        assert g.tensors["tq2_0"].shape == (2, 512)
        assert np.abs(g.dequantize("q8_0") - f32).max() < 0.05
        assert np.abs(g.dequantize("bf16") - f32).max() < 0.05


def test_long_vocab_parses(tmp_path: Path) -> None:
    path = tmp_path / "vocab.gguf"
    tokens = [f"tok{i}\u0120x" for i in range(128_256)]
    w = GGUFWriter(path, "bitnet-b1.58")
    w.add("tokenizer.ggml.tokens", tokens)
    w.add("tokenizer.ggml.token_type", [1] * len(tokens))
    w.write()
    with GGUFFile(path) as g:
        assert g.metadata["tokenizer.ggml.tokens"] == tokens
        assert g.metadata["tokenizer.ggml.token_type"] == [1] * len(tokens)


def test_reader_accepts_nested_arrays(tmp_path: Path) -> None:
    """gguf-py writes arrays of arrays (llama.cpp does not): read them rather than fail."""
    inner = [struct.pack("<IQ", GGUFValueType.INT32, 2) + struct.pack("<ii", 1, 2),
             struct.pack("<IQ", GGUFValueType.STRING, 1) + gstr("x")]
    kv = gstr("nested") + struct.pack("<IIQ", GGUFValueType.ARRAY, GGUFValueType.ARRAY, 2) + b"".join(inner)
    with GGUFFile(write(tmp_path, raw_gguf([kv], []))) as g:
        assert g.metadata["nested"] == [[1, 2], ["x"]]


def test_version_2_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, raw_gguf([kv_u32("a", 5)], [], version=2))
    with GGUFFile(path) as g:
        assert g.version == 2 and g.metadata == {"a": 5}


# --------------------------------------------------------------------------- writer behaviour
def test_writer_is_atomic_and_rejects_bad_input(tmp_path: Path) -> None:
    path = tmp_path / "out.gguf"
    path.write_bytes(b"old contents")
    w = GGUFWriter(path, "llama")
    with pytest.raises(ValueError, match="twice"):
        w.add("general.architecture", "x")
    with pytest.raises(TypeError):
        w.add("obj", object())
    with pytest.raises(TypeError, match="arrays of arrays"):
        w.add("nested", [[1], [2]])
    with pytest.raises(ValueError, match="does not fit"):
        w.add("small", 300, GGUFValueType.UINT8)
    with pytest.raises(ValueError, match="do not fit"):
        w.add("small_list", np.array([1, 300]), GGUFValueType.UINT8)
    with pytest.raises(TypeError, match="not integers"):
        w.add("mixed", [1, 2.5], GGUFValueType.INT32)
    with pytest.raises(ValueError, match="multiple of 256"):
        w.add_ternary("t", np.zeros((2, 100), dtype=np.int8), 1.0, GGMLType.TQ2_0)
    with pytest.raises(ValueError, match="ternary"):
        w.add_ternary("t", np.full((1, 128), 2, dtype=np.int8), 1.0)
    with pytest.raises(ValueError, match="multiple of 32"):
        w.add_tensor("q", np.zeros((2, 10), dtype=np.float32), GGMLType.Q8_0)
    with pytest.raises(ValueError, match="longer than"):
        w.add_tensor("n" * 64, np.zeros(4, dtype=np.float32))
    with pytest.raises(ValueError, match="bytes given"):
        w.add_raw_tensor("r", (4,), GGMLType.F32, b"\0" * 15)
    w.add_tensor("ok", np.zeros(4, dtype=np.float32))
    with pytest.raises(ValueError, match="twice"):
        w.add_tensor("ok", np.zeros(4, dtype=np.float32))

    class Boom(Exception):
        pass

    def explode() -> bytes:
        raise Boom

    w.add_raw_tensor("late", (4,), GGMLType.F32, b"\0" * 16)
    w._tensors["late"].produce = explode  # a failure while streaming data
    with pytest.raises(Boom):
        w.write()
    assert path.read_bytes() == b"old contents"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.gguf"]


def test_lazy_tensors_stream_in_chunks(tmp_path: Path) -> None:
    path = tmp_path / "lazy.gguf"
    values = RNG.integers(-1, 2, size=(8, 512)).astype(np.int8)
    full = np.frombuffer(quants.i2s_tensor_bytes(values, 0.5), dtype=np.uint8)
    w = GGUFWriter(path, "x")
    w.add_lazy("t", values.shape, GGMLType.I2_S, lambda: (full[i : i + 100] for i in range(0, full.size, 100)))
    w.add_lazy("short", (4,), GGMLType.F32, lambda: iter([b"\0" * 8]))
    with pytest.raises(ValueError, match="produced 8 bytes, expected 16"):
        w.write()
    assert not path.exists()
    del w._tensors["short"]
    w.write()
    with GGUFFile(path) as g:
        assert np.array_equal(g.dequantize("t"), values * np.float32(0.5))


def test_writer_output_matches_layout_rules(tmp_path: Path) -> None:
    path = tmp_path / "layout.gguf"
    w = GGUFWriter(path, "x")
    w.add_tensor("a", np.arange(3, dtype=np.float32))  # 12 bytes, padded to 32
    w.add_raw_tensor("b", (2, 32), GGMLType.Q8_0, bytes(range(68)))
    w.write()
    blob = path.read_bytes()
    assert blob[:4] == b"GGUF" and struct.unpack_from("<IQQ", blob, 4) == (3, 2, 1)
    with GGUFFile(path) as g:
        a, b = g.tensors["a"], g.tensors["b"]
        assert b.offset - a.offset == 32 and g.data_offset == a.offset
        assert bytes(g.raw("b")) == bytes(range(68))
    assert len(blob) % 32 == 0 and os.stat(path).st_mode & 0o644 == 0o644


# --------------------------------------------------------------------------- bad files
def test_missing_and_short_files(tmp_path: Path) -> None:
    assert "cannot open" in load_error(tmp_path / "nope.gguf")
    assert "too short" in load_error(write(tmp_path, b""))
    assert "too short" in load_error(write(tmp_path, b"GGUF\x03\0\0\0"))


def test_bad_magic_and_versions(tmp_path: Path) -> None:
    assert "not a GGUF file" in load_error(write(tmp_path, b"\x89PNG" + bytes(40)))
    assert "unsupported GGUF version 1" in load_error(write(tmp_path, raw_gguf([], [], version=1)))
    assert "unsupported GGUF version 4" in load_error(write(tmp_path, raw_gguf([], [], version=4)))
    big = b"GGUF" + struct.pack(">IQQ", 3, 0, 0)
    assert "big-endian" in load_error(write(tmp_path, big))


def test_absurd_counts(tmp_path: Path) -> None:
    msg = load_error(write(tmp_path, raw_gguf([], [], n_kv=2**60)))
    assert "more than" in msg and "can hold" in msg
    msg = load_error(write(tmp_path, raw_gguf([], [], n_tensors=2**63)))
    assert "more than" in msg


def test_array_and_string_overruns(tmp_path: Path) -> None:
    huge_array = gstr("arr") + struct.pack("<IIQ", GGUFValueType.ARRAY, GGUFValueType.UINT32, 2**20)
    assert "array 'arr' claims" in load_error(write(tmp_path, raw_gguf([huge_array], [])))
    huge_str = gstr("s") + struct.pack("<IQ", GGUFValueType.STRING, 2**20) + b"abc"
    msg = load_error(write(tmp_path, raw_gguf([huge_str], [])))
    assert "value of key 's'" in msg and "truncated" in msg
    absurd_str = gstr("s") + struct.pack("<IQ", GGUFValueType.STRING, 2**40) + b"abc"
    assert "limit" in load_error(write(tmp_path, raw_gguf([absurd_str], [])))
    absurd_array = gstr("arr") + struct.pack("<IIQ", GGUFValueType.ARRAY, GGUFValueType.UINT8, 2**30)
    assert "limit" in load_error(write(tmp_path, raw_gguf([absurd_array], [])))
    strs = (gstr("toks") + struct.pack("<IIQ", GGUFValueType.ARRAY, GGUFValueType.STRING, 3) + gstr("a")
            + struct.pack("<Q", 999))
    assert "string in array 'toks'" in load_error(write(tmp_path, raw_gguf([strs], [])))
    bad_key = raw_gguf([gstr(b"\xff\xfe") + struct.pack("<II", 4, 1)], [])
    assert "not valid UTF-8" in load_error(write(tmp_path, bad_key))


def test_string_arrays_read_exactly_and_name_each_fault(tmp_path: Path) -> None:
    def array(*items: bytes, count: int | None = None) -> bytes:
        n = len(items) if count is None else count
        return gstr("toks") + struct.pack("<IIQ", GGUFValueType.ARRAY, GGUFValueType.STRING, n) + b"".join(items)

    texts = ["", "a", "Ġthe", "日本", "🦙", "x" * 300, "\x00nul"]
    blob = raw_gguf([array(*map(gstr, texts)), kv_u32("after", 7)], [])
    meta = GGUFFile(write(tmp_path, blob)).metadata
    assert meta["toks"] == texts and meta["after"] == 7
    # the file ends inside a length field, inside a string, then after the last complete string
    cut_length = array(gstr("abcdefgh"), b"\x05\x00\x00", count=2)
    assert "string length in array 'toks'" in load_error(write(tmp_path, raw_gguf([cut_length], [], align=1)))
    cut_string = array(gstr("a"), struct.pack("<Q", 5) + b"ab", count=2)
    msg = load_error(write(tmp_path, raw_gguf([cut_string], [], align=1)))
    assert "string in array 'toks'" in msg and "truncated" in msg
    too_long = array(gstr("a"), struct.pack("<Q", 2**40) + b"ab", count=2)
    assert "claims 1099511627776 bytes (limit" in load_error(write(tmp_path, raw_gguf([too_long], [], align=1)))
    not_utf8 = array(gstr("a"), gstr(b"\xc3("), count=2)
    assert "holds a string at byte" in load_error(write(tmp_path, raw_gguf([not_utf8], [], align=1)))


def test_unknown_types(tmp_path: Path) -> None:
    bad_kv = gstr("k") + struct.pack("<II", 13, 0)
    assert "key 'k' has unknown value type 13" in load_error(write(tmp_path, raw_gguf([bad_kv], [])))
    bad_tensor = raw_gguf([], [tensor_info("blk.0.w", [32], 99, 0)], bytes(64))
    msg = load_error(write(tmp_path, bad_tensor))
    assert "'blk.0.w'" in msg and "unknown ggml type id 99" in msg


def test_tensor_offsets(tmp_path: Path) -> None:
    misaligned = raw_gguf([], [tensor_info("w", [4], GGMLType.F32, 8)], bytes(64))
    assert "not a multiple of the alignment 32" in load_error(write(tmp_path, misaligned))
    past_end = raw_gguf([], [tensor_info("w", [4], GGMLType.F32, 2**40)], bytes(64))
    assert "data offset of tensor 'w'" in load_error(write(tmp_path, past_end))
    too_many_dims = raw_gguf([], [tensor_info("w", [1] * 5, GGMLType.F32, 0)], bytes(64))
    assert "5 dimensions" in load_error(write(tmp_path, too_many_dims))
    bad_row = raw_gguf([], [tensor_info("w", [33], GGMLType.Q8_0, 0)], bytes(64))
    assert "not a multiple of its block size 32" in load_error(write(tmp_path, bad_row))
    giant = raw_gguf([], [tensor_info("w", [2**31, 2**31], GGMLType.F32, 0)], bytes(64))
    assert "impossible" in load_error(write(tmp_path, giant))
    dup = raw_gguf([], [tensor_info("w", [4], GGMLType.F32, 0), tensor_info("w", [4], GGMLType.F32, 32)], bytes(64))
    assert "duplicate tensor name 'w'" in load_error(write(tmp_path, dup))
    bad_align = raw_gguf([kv_u32("general.alignment", 24)], [])
    assert "general.alignment" in load_error(write(tmp_path, bad_align))
    dup_key = raw_gguf([kv_u32("a", 1), kv_u32("a", 2)], [])
    assert "duplicate metadata key 'a'" in load_error(write(tmp_path, dup_key))


def test_truncated_download_says_truncated(tmp_path: Path) -> None:
    path = tmp_path / "model.gguf"
    make_model(path)
    blob = path.read_bytes()
    with GGUFFile(path) as g:
        data_start = g.data_offset
        last = list(g.tensors.values())[-1]
    for cut in (30, 200, data_start - 1, data_start + 10, last.offset + last.nbytes - 1):
        msg = load_error(write(tmp_path, blob[:cut], "cut.gguf"))
        assert "truncated" in msg, (cut, msg)
