"""GGUF reader: memory-mapped, zero-copy, validating.

A GGUF file is a header (magic ``GGUF``, version, tensor count, key/value count), the key/value
metadata, one info record per tensor (name, dims with ``ne[0]`` the fastest-varying, type, data
offset), then the tensor data starting at the next multiple of ``general.alignment`` (default 32).
All integers are little-endian. Every problem with a file raises :class:`EngineError` with one
line naming it; a corrupt count never turns into a big allocation.
"""

from __future__ import annotations

import enum
import mmap
import os
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neuro_bitnet.engine import _core, quants  # type: ignore[attr-defined]  # _core (C) has no stubs
from neuro_bitnet.errors import EngineError

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4
MAX_ARRAY_DEPTH = 4
# Sanity limits well above any real model (vocabularies are < 1M entries, chat templates KBs):
# they stop a corrupt length from turning into a multi-GB Python object.
MAX_ARRAY_LEN = 1 << 24
MAX_STRING_BYTES = 256 << 20


class GGMLType(enum.IntEnum):
    """Tensor data types (ggml ids; I2_S is Microsoft bitnet.cpp's id 36)."""

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q8_1 = 9
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    Q8_K = 15
    IQ2_XXS = 16
    IQ2_XS = 17
    IQ3_XXS = 18
    IQ1_S = 19
    IQ4_NL = 20
    IQ3_S = 21
    IQ2_S = 22
    IQ4_XS = 23
    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28
    IQ1_M = 29
    BF16 = 30
    TQ1_0 = 34
    TQ2_0 = 35
    I2_S = 36


# (weights per block, bytes per block). I2_S is special-cased: see tensor_nbytes().
BLOCK_LAYOUT: dict[GGMLType, tuple[int, int]] = {
    GGMLType.F32: (1, 4),
    GGMLType.F16: (1, 2),
    GGMLType.Q4_0: (32, 18),
    GGMLType.Q4_1: (32, 20),
    GGMLType.Q5_0: (32, 22),
    GGMLType.Q5_1: (32, 24),
    GGMLType.Q8_0: (32, 34),
    GGMLType.Q8_1: (32, 36),
    GGMLType.Q2_K: (256, 84),
    GGMLType.Q3_K: (256, 110),
    GGMLType.Q4_K: (256, 144),
    GGMLType.Q5_K: (256, 176),
    GGMLType.Q6_K: (256, 210),
    GGMLType.Q8_K: (256, 292),
    GGMLType.IQ2_XXS: (256, 66),
    GGMLType.IQ2_XS: (256, 74),
    GGMLType.IQ3_XXS: (256, 98),
    GGMLType.IQ1_S: (256, 50),
    GGMLType.IQ4_NL: (32, 18),
    GGMLType.IQ3_S: (256, 110),
    GGMLType.IQ2_S: (256, 82),
    GGMLType.IQ4_XS: (256, 136),
    GGMLType.I8: (1, 1),
    GGMLType.I16: (1, 2),
    GGMLType.I32: (1, 4),
    GGMLType.I64: (1, 8),
    GGMLType.F64: (1, 8),
    GGMLType.IQ1_M: (256, 56),
    GGMLType.BF16: (1, 2),
    GGMLType.TQ1_0: (256, 54),
    GGMLType.TQ2_0: (256, 66),
    GGMLType.I2_S: (quants.I2S_BLOCK, quants.I2S_BLOCK // 4),
}

# Element dtype of the types that array() returns as plain numbers.
PLAIN_DTYPES: dict[GGMLType, str] = {
    GGMLType.F32: "<f4",
    GGMLType.F16: "<f2",
    GGMLType.BF16: "<u2",
    GGMLType.I8: "i1",
    GGMLType.I16: "<i2",
    GGMLType.I32: "<i4",
    GGMLType.I64: "<i8",
    GGMLType.F64: "<f8",
}


class GGUFValueType(enum.IntEnum):
    """Metadata value types."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


# struct / numpy format of the fixed-size value types.
SCALAR_FORMATS: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}
SCALAR_DTYPES: dict[GGUFValueType, str] = {
    GGUFValueType.UINT8: "u1",
    GGUFValueType.INT8: "i1",
    GGUFValueType.UINT16: "<u2",
    GGUFValueType.INT16: "<i2",
    GGUFValueType.UINT32: "<u4",
    GGUFValueType.INT32: "<i4",
    GGUFValueType.FLOAT32: "<f4",
    GGUFValueType.BOOL: "u1",
    GGUFValueType.UINT64: "<u8",
    GGUFValueType.INT64: "<i8",
    GGUFValueType.FLOAT64: "<f8",
}

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")


def tensor_nbytes(ggml_type: GGMLType, n_elements: int) -> int:
    """Bytes one tensor of ``n_elements`` occupies in the file."""
    if ggml_type == GGMLType.I2_S:
        return quants.i2s_nbytes(n_elements)
    block, size = BLOCK_LAYOUT[ggml_type]
    return n_elements // block * size


def align_up(value: int, alignment: int) -> int:
    """``value`` rounded up to a multiple of ``alignment``."""
    return -(-value // alignment) * alignment


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's description. ``shape`` is in numpy order: the file's ``ne`` reversed."""

    name: str
    shape: tuple[int, ...]
    ggml_type: GGMLType
    offset: int  # absolute byte offset in the file
    nbytes: int

    @property
    def n_elements(self) -> int:
        n = 1
        for dim in self.shape:
            n *= dim
        return n


class _Cursor:
    """Bounds-checked little-endian reads from the mapped header."""

    def __init__(self, buf: mmap.mmap, size: int, name: str) -> None:
        self.buf = buf
        self.size = size
        self.pos = 0
        self.name = name

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise EngineError(
                f"{self.name}: {what} at byte {self.pos} needs {n} bytes but the file ends at "
                f"{self.size}: the file looks truncated (incomplete download?) or corrupt"
            )

    def u32(self, what: str) -> int:
        self.need(4, what)
        (value,) = _U32.unpack_from(self.buf, self.pos)
        self.pos += 4
        return value

    def u64(self, what: str) -> int:
        self.need(8, what)
        (value,) = _U64.unpack_from(self.buf, self.pos)
        self.pos += 8
        return value

    def string(self, what: str) -> str:
        length = self.u64(f"length of {what}")
        if length > MAX_STRING_BYTES:
            raise EngineError(
                f"{self.name}: {what} at byte {self.pos - 8} claims {length} bytes "
                f"(limit {MAX_STRING_BYTES}): the file is corrupt"
            )
        self.need(length, f"{what} ({length} bytes)")
        raw = self.buf[self.pos : self.pos + length]
        self.pos += length
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise EngineError(f"{self.name}: {what} at byte {self.pos - length} is not valid UTF-8") from None


class GGUFFile:
    """A GGUF file opened read-only through a memory map.

    ``metadata`` holds every key (arrays as Python lists), ``tensors`` every tensor's
    :class:`TensorInfo` in file order. Tensor accessors return views of the map, not copies, so
    keep the file open while they are in use (a view keeps the map alive even after close()).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._mmap: mmap.mmap | None = None
        self.version = 0
        self.metadata: dict[str, Any] = {}
        self.tensors: dict[str, TensorInfo] = {}
        self.alignment = DEFAULT_ALIGNMENT
        self.data_offset = 0
        try:
            # O_NONBLOCK: opening a FIFO (or a device) would otherwise wait for a writer forever.
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
            with open(fd, "rb") as fh:
                st = os.fstat(fh.fileno())
                if not stat.S_ISREG(st.st_mode):
                    raise EngineError(f"{self.path}: not a regular file (a model must be a GGUF file)")
                size = st.st_size
                if size < 24:
                    raise EngineError(
                        f"{self.path.name}: file is too short to be GGUF ({size} bytes; "
                        "the file looks truncated or is not a model)"
                    )
                self._mmap = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except OSError as exc:
            raise EngineError(f"cannot open model file {self.path}: {exc.strerror or exc}") from None
        self.size = size
        try:
            self._parse()
        except EngineError:
            self.close()
            raise
        except (ValueError, OverflowError, MemoryError, struct.error) as exc:  # defensive net
            self.close()
            raise EngineError(f"{self.path.name}: malformed GGUF file ({exc})") from None

    # ----------------------------------------------------------------- parsing
    def _parse(self) -> None:
        cur = _Cursor(self._mm, self.size, self.path.name)
        magic = bytes(self._mm[0:4])
        if magic != GGUF_MAGIC:
            raise EngineError(f"{self.path.name}: not a GGUF file (magic {magic!r}, expected b'GGUF')")
        cur.pos = 4
        version = cur.u32("version")
        if version not in SUPPORTED_VERSIONS:
            if version & 0xFFFF == 0 and (version >> 24) in SUPPORTED_VERSIONS:
                raise EngineError(f"{self.path.name}: big-endian GGUF files are not supported")
            raise EngineError(
                f"{self.path.name}: unsupported GGUF version {version} (supported: 2, 3)"
            )
        self.version = version
        n_tensors = cur.u64("tensor count")
        n_kv = cur.u64("metadata count")
        remaining = self.size - cur.pos
        # A key/value takes at least 13 bytes, a tensor info at least 24.
        if n_kv * 13 > remaining or n_tensors * 24 > remaining or n_kv * 13 + n_tensors * 24 > remaining:
            raise EngineError(
                f"{self.path.name}: header claims {n_tensors} tensors and {n_kv} metadata keys, "
                f"more than a {self.size}-byte file can hold (corrupt or truncated file)"
            )
        for _ in range(n_kv):
            key = cur.string("metadata key")
            vtype = self._value_type(cur.u32(f"type of key {key!r}"), key)
            if key in self.metadata:
                raise EngineError(f"{self.path.name}: duplicate metadata key {key!r}")
            self.metadata[key] = self._read_value(cur, vtype, key, 0)
        self.alignment = self._read_alignment()

        for index in range(n_tensors):
            name = cur.string(f"name of tensor #{index}")
            n_dims = cur.u32(f"dimension count of tensor {name!r}")
            if n_dims > MAX_DIMS:
                raise EngineError(f"{self.path.name}: tensor {name!r} has {n_dims} dimensions (max {MAX_DIMS})")
            ne = [cur.u64(f"dimensions of tensor {name!r}") for _ in range(n_dims)]
            type_id = cur.u32(f"type of tensor {name!r}")
            rel_offset = cur.u64(f"data offset of tensor {name!r}")
            if name in self.tensors:
                raise EngineError(f"{self.path.name}: duplicate tensor name {name!r}")
            try:
                ggml_type = GGMLType(type_id)
            except ValueError:
                raise EngineError(
                    f"{self.path.name}: tensor {name!r} has unknown ggml type id {type_id}"
                ) from None
            n_elements = 1
            for dim in ne:
                n_elements *= dim
            # No type stores more than 8 weights a byte; a zero dim must not hide a huge one.
            if n_elements > self.size * 8 or max(ne, default=0) > self.size * 8:
                raise EngineError(
                    f"{self.path.name}: tensor {name!r} claims dimensions {ne}, impossible in a "
                    f"{self.size}-byte file (corrupt file)"
                )
            block = BLOCK_LAYOUT[ggml_type][0]
            if ggml_type != GGMLType.I2_S and ne and ne[0] % block:
                raise EngineError(
                    f"{self.path.name}: tensor {name!r} of type {ggml_type.name} has row length "
                    f"{ne[0]}, not a multiple of its block size {block}"
                )
            if rel_offset % self.alignment:
                raise EngineError(
                    f"{self.path.name}: tensor {name!r} data offset {rel_offset} is not a multiple "
                    f"of the alignment {self.alignment}"
                )
            nbytes = tensor_nbytes(ggml_type, n_elements)
            self.tensors[name] = TensorInfo(name, tuple(reversed(ne)), ggml_type, rel_offset, nbytes)

        self.data_offset = align_up(cur.pos, self.alignment)
        for name, info in list(self.tensors.items()):
            start = self.data_offset + info.offset
            end = start + info.nbytes
            if start > self.size:
                raise EngineError(
                    f"{self.path.name}: data offset of tensor {name!r} (byte {start}) is past the end "
                    f"of the {self.size}-byte file: the file looks truncated (incomplete download?) "
                    "or corrupt"
                )
            if end > self.size:
                raise EngineError(
                    f"{self.path.name}: data of tensor {name!r} ends at byte {end} but the file has "
                    f"only {self.size} bytes: the file looks truncated (incomplete download?)"
                )
            self.tensors[name] = TensorInfo(name, info.shape, info.ggml_type, start, info.nbytes)

    def _value_type(self, type_id: int, key: str) -> GGUFValueType:
        try:
            return GGUFValueType(type_id)
        except ValueError:
            raise EngineError(f"{self.path.name}: key {key!r} has unknown value type {type_id}") from None

    def _read_value(self, cur: _Cursor, vtype: GGUFValueType, key: str, depth: int) -> Any:
        if vtype == GGUFValueType.STRING:
            return cur.string(f"value of key {key!r}")
        if vtype != GGUFValueType.ARRAY:
            fmt = SCALAR_FORMATS[vtype]
            width = struct.calcsize(fmt)
            cur.need(width, f"value of key {key!r}")
            (value,) = struct.unpack_from(fmt, cur.buf, cur.pos)
            cur.pos += width
            return value
        if depth >= MAX_ARRAY_DEPTH:
            raise EngineError(f"{self.path.name}: key {key!r} nests arrays deeper than {MAX_ARRAY_DEPTH}")
        etype = self._value_type(cur.u32(f"array type of key {key!r}"), key)
        count = cur.u64(f"array length of key {key!r}")
        min_size = {GGUFValueType.STRING: 8, GGUFValueType.ARRAY: 12}.get(etype)
        if min_size is None:
            min_size = np.dtype(SCALAR_DTYPES[etype]).itemsize
        if count > MAX_ARRAY_LEN:
            raise EngineError(
                f"{self.path.name}: array {key!r} claims {count} elements (limit {MAX_ARRAY_LEN}): "
                "the file is corrupt"
            )
        if count * min_size > self.size - cur.pos:
            raise EngineError(
                f"{self.path.name}: array {key!r} claims {count} elements, more than the rest of the "
                "file can hold: the file looks truncated or corrupt"
            )
        if etype == GGUFValueType.STRING:
            return self._read_string_array(cur, count, key)
        if etype == GGUFValueType.ARRAY:
            return [self._read_value(cur, GGUFValueType.ARRAY, key, depth + 1) for _ in range(count)]
        dtype = np.dtype(SCALAR_DTYPES[etype])
        values = np.frombuffer(cur.buf, dtype=dtype, count=count, offset=cur.pos)
        cur.pos += count * dtype.itemsize
        if etype == GGUFValueType.BOOL:
            return (values != 0).tolist()
        return values.tolist()

    def _read_string_array(self, cur: _Cursor, count: int, key: str) -> list[str]:
        # The hot loop for vocabularies (128k tokens, 280k merges) runs in C.
        out, pos, status = _core.read_gguf_strings(cur.buf, cur.pos, count, MAX_STRING_BYTES)
        cur.pos = pos
        if status == 0:
            return out
        if status == 1 and cur.size - pos < 8:
            cur.need(8, f"string length in array {key!r}")
        (length,) = _U64.unpack_from(cur.buf, pos)
        if status == 2:
            raise EngineError(
                f"{self.path.name}: a string in array {key!r} claims {length} bytes "
                f"(limit {MAX_STRING_BYTES}): the file is corrupt"
            )
        cur.pos = pos + 8
        if status == 1:
            cur.need(length, f"string in array {key!r}")
        raise EngineError(
            f"{self.path.name}: array {key!r} holds a string at byte {pos + 8} that is not valid UTF-8"
        )

    def _read_alignment(self) -> int:
        value = self.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if (
            not isinstance(value, int)
            or isinstance(value, bool)
            or value <= 0
            or value & (value - 1)
            or value > 1 << 20
        ):
            raise EngineError(f"{self.path.name}: general.alignment {value!r} is not a power of two")
        return value

    # ----------------------------------------------------------------- access
    @property
    def _mm(self) -> mmap.mmap:
        if self._mmap is None:
            raise EngineError(f"{self.path.name}: the GGUF file is closed")
        return self._mmap

    def info(self, name: str) -> TensorInfo:
        """The :class:`TensorInfo` of ``name``; EngineError if the file has no such tensor."""
        info = self.tensors.get(name)
        if info is None:
            raise EngineError(f"{self.path.name}: no tensor named {name!r}")
        return info

    def raw(self, name: str) -> memoryview:
        """The tensor's bytes in the file, as a zero-copy slice of the memory map."""
        info = self.info(name)
        return memoryview(self._mm)[info.offset : info.offset + info.nbytes]

    def _bytes(self, info: TensorInfo) -> np.ndarray:
        return np.frombuffer(self._mm, dtype=np.uint8, count=info.nbytes, offset=info.offset)

    def array(self, name: str) -> np.ndarray:
        """Zero-copy, read-only view of a tensor.

        F32/F16/F64/I8..I64 come shaped with their own dtype, BF16 as uint16 bits. Block types
        come as uint8 shaped ``shape[:-1] + (bytes per row,)``; I2_S as its flat bytes
        (packed weights plus the 32-byte scale trailer), since its blocks span rows.
        """
        info = self.info(name)
        dtype = PLAIN_DTYPES.get(info.ggml_type)
        if dtype is not None:
            view = np.frombuffer(self._mm, dtype=dtype, count=info.n_elements, offset=info.offset)
            return view.reshape(info.shape)
        data = self._bytes(info)
        if info.ggml_type == GGMLType.I2_S or not info.shape:
            return data
        block, size = BLOCK_LAYOUT[info.ggml_type]
        return data.reshape(info.shape[:-1] + (info.shape[-1] // block * size,))

    def ternary(self, name: str) -> tuple[np.ndarray, float]:
        """An I2_S tensor as (flat zero-copy view of its packed bytes, float scale).

        The packed bytes are whole 128-weight blocks over the flattened tensor (see quants).
        """
        info = self.info(name)
        if info.ggml_type != GGMLType.I2_S:
            raise EngineError(f"{self.path.name}: tensor {name!r} is {info.ggml_type.name}, not I2_S")
        packed_len = info.nbytes - quants.I2S_TRAILER
        data = self._bytes(info)
        scale = float(data[packed_len : packed_len + 4].view("<f4")[0])
        return data[:packed_len], scale

    def dequantize(self, name: str) -> np.ndarray:
        """The tensor as a new float32 array of its shape (any type quants can decode)."""
        info = self.info(name)
        t = info.ggml_type
        if t in PLAIN_DTYPES and t != GGMLType.BF16:
            return self.array(name).astype(np.float32)
        data = self._bytes(info)
        decoders = {
            GGMLType.BF16: lambda: quants.dequantize_bf16(data),
            GGMLType.Q8_0: lambda: quants.dequantize_q8_0(data, info.n_elements),
            GGMLType.TQ2_0: lambda: quants.dequantize_tq2_0(data, info.n_elements),
            GGMLType.TQ1_0: lambda: quants.dequantize_tq1_0(data, info.n_elements),
            GGMLType.I2_S: lambda: quants.dequantize_i2s(data, info.n_elements),
        }
        if t not in decoders:
            raise EngineError(f"{self.path.name}: tensor {name!r}: cannot dequantize type {t.name}")
        try:
            flat = decoders[t]()
        except ValueError as exc:
            raise EngineError(f"{self.path.name}: tensor {name!r}: {exc}") from None
        return flat.reshape(info.shape)

    def drop_pages(self, name: str) -> None:
        """Give the whole memory pages of a tensor back to the page cache (they fault in again
        if read): for big tensors read once in a while, such as the head after a scoring call."""
        if not hasattr(mmap, "MADV_DONTNEED"):
            return
        info = self.info(name)
        start = -(-info.offset // mmap.PAGESIZE) * mmap.PAGESIZE
        end = (info.offset + info.nbytes) // mmap.PAGESIZE * mmap.PAGESIZE
        if end > start:
            self._mm.madvise(mmap.MADV_DONTNEED, start, end - start)

    def close(self) -> None:
        """Release the memory map (views still in use keep it alive until they go)."""
        mm, self._mmap = self._mmap, None
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass  # exported views exist; the map is freed with the last of them

    def __enter__(self) -> GGUFFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GGUFFile({str(self.path)!r}, version={self.version}, tensors={len(self.tensors)})"
