"""GGUF writer: metadata, float and ternary tensors, written atomically.

Usage::

    w = GGUFWriter(path, "bitnet-b1.58")
    w.add("bitnet-b1.58.block_count", 30)
    w.add_tensor("token_embd.weight", emb, GGMLType.F16)
    w.add_ternary("blk.0.attn_q.weight", values, scale)
    w.write()

Tensors are given in numpy shape ``(rows, cols)``; the file stores ``ne`` reversed (``ne[0] =
cols``) as ggml does. Float tensors are kept by reference and converted one at a time while
writing (so do not modify them before ``write()``); ternary tensors are packed when added, which
shrinks them at least four-fold.
"""

from __future__ import annotations

import os
import struct
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from neuro_bitnet.engine import quants
from neuro_bitnet.engine.gguf import (
    BLOCK_LAYOUT,
    DEFAULT_ALIGNMENT,
    GGUF_MAGIC,
    MAX_DIMS,
    SCALAR_DTYPES,
    SCALAR_FORMATS,
    GGMLType,
    GGUFValueType,
    align_up,
    tensor_nbytes,
)

GGUF_VERSION = 3
GGML_MAX_NAME = 64  # ggml keeps tensor names in a 64-byte buffer, NUL included
_CHUNK_BYTES = 16 << 20  # float tensors are converted and written this much at a time
_INT_RANGES = {
    GGUFValueType.UINT8: (0, 2**8 - 1),
    GGUFValueType.INT8: (-(2**7), 2**7 - 1),
    GGUFValueType.UINT16: (0, 2**16 - 1),
    GGUFValueType.INT16: (-(2**15), 2**15 - 1),
    GGUFValueType.UINT32: (0, 2**32 - 1),
    GGUFValueType.INT32: (-(2**31), 2**31 - 1),
    GGUFValueType.UINT64: (0, 2**64 - 1),
    GGUFValueType.INT64: (-(2**63), 2**63 - 1),
}
_NUMPY_VALUE_TYPES = {
    np.dtype(np.uint8): GGUFValueType.UINT8,
    np.dtype(np.int8): GGUFValueType.INT8,
    np.dtype(np.uint16): GGUFValueType.UINT16,
    np.dtype(np.int16): GGUFValueType.INT16,
    np.dtype(np.uint32): GGUFValueType.UINT32,
    np.dtype(np.int32): GGUFValueType.INT32,
    np.dtype(np.float32): GGUFValueType.FLOAT32,
    np.dtype(np.bool_): GGUFValueType.BOOL,
    np.dtype(np.uint64): GGUFValueType.UINT64,
    np.dtype(np.int64): GGUFValueType.INT64,
    np.dtype(np.float64): GGUFValueType.FLOAT64,
}
FLOAT_TYPES = (GGMLType.F32, GGMLType.F16, GGMLType.BF16, GGMLType.Q8_0)
TERNARY_TYPES = (GGMLType.I2_S, GGMLType.TQ2_0, GGMLType.TQ1_0)


@dataclass
class _PendingTensor:
    name: str
    shape: tuple[int, ...]
    ggml_type: GGMLType
    nbytes: int
    produce: Callable[[], Iterable[Any]]  # yields bytes-like chunks, nbytes in all


def _string_bytes(text: str) -> bytes:
    raw = text.encode("utf-8")
    return struct.pack("<Q", len(raw)) + raw


def _int_type(value: int) -> GGUFValueType:
    if value < 0:
        return GGUFValueType.INT32 if value >= -(2**31) else GGUFValueType.INT64
    return GGUFValueType.UINT32 if value < 2**32 else GGUFValueType.UINT64


def _infer_type(value: Any) -> GGUFValueType:
    if isinstance(value, (bool, np.bool_)):
        return GGUFValueType.BOOL
    if isinstance(value, (int, np.integer)):
        return _int_type(int(value))
    if isinstance(value, (float, np.floating)):
        return GGUFValueType.FLOAT32
    if isinstance(value, str):
        return GGUFValueType.STRING
    if isinstance(value, (list, tuple, np.ndarray)):
        return GGUFValueType.ARRAY
    raise TypeError(f"cannot store a {type(value).__name__} in GGUF metadata")


def _infer_element_type(values: Any) -> GGUFValueType:
    if isinstance(values, np.ndarray):
        vtype = _NUMPY_VALUE_TYPES.get(values.dtype.newbyteorder("="))
        if vtype is None:
            raise TypeError(f"cannot store a numpy {values.dtype} array in GGUF metadata")
        return vtype
    if len(values) == 0:
        return GGUFValueType.INT32
    first = values[0]
    if isinstance(first, (bool, np.bool_)):
        return GGUFValueType.BOOL
    if isinstance(first, str):
        return GGUFValueType.STRING
    if isinstance(first, (list, tuple, np.ndarray)):
        return GGUFValueType.ARRAY
    if any(isinstance(v, (float, np.floating)) for v in values):
        return GGUFValueType.FLOAT32
    if isinstance(first, (int, np.integer)):
        lo, hi = min(values), max(values)
        if lo >= -(2**31) and hi < 2**31:
            return GGUFValueType.INT32
        return GGUFValueType.INT64 if lo < 0 else GGUFValueType.UINT64
    raise TypeError(f"cannot store a list of {type(first).__name__} in GGUF metadata")


def _encode_scalar(vtype: GGUFValueType, value: Any, key: str) -> bytes:
    if vtype == GGUFValueType.STRING:
        if not isinstance(value, str):
            raise TypeError(f"{key}: expected a str, got {type(value).__name__}")
        return _string_bytes(value)
    if vtype in _INT_RANGES:
        if isinstance(value, (float, np.floating)) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"{key}: expected an int for {vtype.name}, got {value!r}")
        lo, hi = _INT_RANGES[vtype]
        if not lo <= int(value) <= hi:
            raise ValueError(f"{key}: {value} does not fit in {vtype.name}")
        return struct.pack(SCALAR_FORMATS[vtype], int(value))
    if vtype == GGUFValueType.BOOL:
        return struct.pack("<?", bool(value))
    return struct.pack(SCALAR_FORMATS[vtype], float(value))


def _encode_array(etype: GGUFValueType, values: Any, key: str) -> bytes:
    if etype == GGUFValueType.STRING:
        parts = [struct.pack("<IQ", etype, len(values))]
        parts.extend(_string_bytes(v) if isinstance(v, str) else _encode_scalar(etype, v, key) for v in values)
        return b"".join(parts)
    if etype == GGUFValueType.ARRAY:
        raise TypeError(f"{key}: arrays of arrays are not accepted by llama.cpp; flatten the value")
    dtype = np.dtype(SCALAR_DTYPES[etype])
    data = np.asarray(values)
    if etype in _INT_RANGES and data.size:
        if data.dtype.kind not in "iu" and not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in data.reshape(-1).tolist()
        ):
            raise TypeError(f"{key}: {etype.name} array holds values that are not integers")
        lo, hi = _INT_RANGES[etype]
        if int(data.min()) < lo or int(data.max()) > hi:
            raise ValueError(f"{key}: array values do not fit in {etype.name}")
    if etype == GGUFValueType.BOOL:
        data = data.astype(np.bool_)
    data = data.astype(dtype)
    return struct.pack("<IQ", etype, data.size) + data.tobytes()


class GGUFWriter:
    """Builds one GGUF file (version 3, little-endian). Nothing touches ``path`` until write()."""

    def __init__(self, path: str | os.PathLike[str], arch: str, *, alignment: int = DEFAULT_ALIGNMENT) -> None:
        if alignment <= 0 or alignment & (alignment - 1):
            raise ValueError(f"alignment must be a power of two, got {alignment}")
        self.path = Path(path)
        self.alignment = alignment
        self._kv: dict[str, bytes] = {}
        self._tensors: dict[str, _PendingTensor] = {}
        self.add("general.architecture", arch)
        if alignment != DEFAULT_ALIGNMENT:
            self.add("general.alignment", alignment, GGUFValueType.UINT32)

    # ----------------------------------------------------------------- metadata
    def add(self, key: str, value: Any, vtype: GGUFValueType | None = None) -> None:
        """Add one metadata key. The type is inferred unless ``vtype`` is given; for a list,
        ``vtype`` may name the element type (or be ARRAY to infer it)."""
        if key in self._kv:
            raise ValueError(f"metadata key {key!r} added twice")
        vtype = _infer_type(value) if vtype is None else GGUFValueType(vtype)
        is_list = isinstance(value, (list, tuple, np.ndarray))
        if is_list:
            etype = _infer_element_type(value) if vtype == GGUFValueType.ARRAY else vtype
            body = _encode_array(etype, value, key)
            vtype = GGUFValueType.ARRAY
        elif vtype == GGUFValueType.ARRAY:
            raise TypeError(f"{key}: ARRAY needs a list value")
        else:
            body = _encode_scalar(vtype, value, key)
        self._kv[key] = _string_bytes(key) + struct.pack("<I", vtype) + body

    # ----------------------------------------------------------------- tensors
    def _check(self, name: str, shape: tuple[int, ...], ggml_type: GGMLType) -> int:
        """Validate a new tensor; returns its size in bytes."""
        if name in self._tensors:
            raise ValueError(f"tensor {name!r} added twice")
        if len(name.encode("utf-8")) >= GGML_MAX_NAME:
            raise ValueError(f"tensor name {name!r} is longer than ggml's {GGML_MAX_NAME - 1} bytes")
        if not 1 <= len(shape) <= MAX_DIMS:
            raise ValueError(f"tensor {name!r}: {len(shape)} dimensions, GGUF allows 1..{MAX_DIMS}")
        block = BLOCK_LAYOUT[ggml_type][0]
        if ggml_type != GGMLType.I2_S and shape[-1] % block:
            raise ValueError(
                f"tensor {name!r}: {ggml_type.name} needs rows that are a multiple of {block} "
                f"weights, got shape {shape}"
            )
        return tensor_nbytes(ggml_type, int(np.prod(shape, dtype=np.int64)))

    def add_tensor(self, name: str, array: np.ndarray, ggml_type: GGMLType | None = None) -> None:
        """Add a float tensor as F32, F16, BF16 or Q8_0 (default: F16 for float16 input, else F32)."""
        arr = np.asarray(array)
        if ggml_type is None:
            ggml_type = GGMLType.F16 if arr.dtype == np.float16 else GGMLType.F32
        ggml_type = GGMLType(ggml_type)
        if ggml_type not in FLOAT_TYPES:
            raise ValueError(f"add_tensor writes {', '.join(t.name for t in FLOAT_TYPES)}, not {ggml_type.name}")
        if arr.dtype.kind not in "fiub":
            raise TypeError(f"tensor {name!r}: cannot convert {arr.dtype} to {ggml_type.name}")

        def produce() -> Iterator[Any]:
            # Converted a slab of rows at a time, so no full-size copy is ever made.
            rows = arr.reshape(-1, arr.shape[-1]) if arr.ndim else arr.reshape(1, 1)
            step = max(1, _CHUNK_BYTES // max(1, rows.shape[1] * 4))
            for start in range(0, rows.shape[0], step):
                slab = rows[start : start + step]
                if ggml_type == GGMLType.F32:
                    yield np.ascontiguousarray(slab, dtype="<f4")
                elif ggml_type == GGMLType.F16:
                    yield np.ascontiguousarray(slab, dtype="<f2")
                elif ggml_type == GGMLType.BF16:
                    yield quants.quantize_bf16(slab)
                else:
                    yield quants.quantize_q8_0(slab)

        shape = tuple(int(d) for d in arr.shape)
        nbytes = self._check(name, shape, ggml_type)
        self._tensors[name] = _PendingTensor(name, shape, ggml_type, nbytes, produce)

    def add_ternary(
        self, name: str, values: np.ndarray, scale: float, ggml_type: GGMLType = GGMLType.I2_S
    ) -> None:
        """Add a ternary tensor (values in -1..1, numpy shape) with one scale, as I2_S/TQ2_0/TQ1_0."""
        vals = np.asarray(values)
        ggml_type = GGMLType(ggml_type)
        if ggml_type not in TERNARY_TYPES:
            raise ValueError(f"add_ternary writes I2_S, TQ2_0 or TQ1_0, not {ggml_type.name}")
        if vals.dtype.kind not in "iu":
            raise TypeError(f"tensor {name!r}: ternary values must be integers, got {vals.dtype}")
        shape = tuple(int(d) for d in vals.shape)
        nbytes = self._check(name, shape, ggml_type)
        if ggml_type == GGMLType.I2_S:
            data = np.frombuffer(quants.i2s_tensor_bytes(vals, scale), dtype=np.uint8)
        elif ggml_type == GGMLType.TQ2_0:
            data = quants.pack_tq2_0(vals, scale)
        else:
            data = quants.pack_tq1_0(vals, scale)
        self._tensors[name] = _PendingTensor(name, shape, ggml_type, nbytes, lambda: (data,))

    def add_raw_tensor(self, name: str, shape: Iterable[int], ggml_type: GGMLType, data: Any) -> None:
        """Add a tensor whose bytes are already encoded (any type; e.g. copied from another GGUF)."""
        shape = tuple(int(d) for d in shape)
        ggml_type = GGMLType(ggml_type)
        nbytes = self._check(name, shape, ggml_type)
        got = memoryview(data).nbytes
        if got != nbytes:
            raise ValueError(f"tensor {name!r}: {got} bytes given, {ggml_type.name} {shape} takes {nbytes}")
        self._tensors[name] = _PendingTensor(name, shape, ggml_type, nbytes, lambda: (data,))

    def add_lazy(
        self, name: str, shape: Iterable[int], ggml_type: GGMLType, produce: Callable[[], Iterable[Any]]
    ) -> None:
        """Add a tensor whose encoded bytes ``produce()`` yields in chunks while the file is written
        (for tensors too big to hold; the total must equal the type's size for ``shape``)."""
        shape = tuple(int(d) for d in shape)
        ggml_type = GGMLType(ggml_type)
        nbytes = self._check(name, shape, ggml_type)
        self._tensors[name] = _PendingTensor(name, shape, ggml_type, nbytes, produce)

    # ----------------------------------------------------------------- output
    def _header(self) -> bytes:
        parts = [GGUF_MAGIC, struct.pack("<IQQ", GGUF_VERSION, len(self._tensors), len(self._kv))]
        parts.extend(self._kv.values())
        offset = 0
        for t in self._tensors.values():
            parts.append(_string_bytes(t.name))
            parts.append(struct.pack("<I", len(t.shape)))
            parts.append(struct.pack(f"<{len(t.shape)}Q", *reversed(t.shape)))
            parts.append(struct.pack("<IQ", t.ggml_type, offset))
            offset = align_up(offset + t.nbytes, self.alignment)
        header = b"".join(parts)
        return header + bytes(align_up(len(header), self.alignment) - len(header))

    def header_size(self) -> int:
        """Bytes of the header write() would produce (metadata, tensor table, alignment)."""
        return len(self._header())

    def write(self) -> Path:
        """Write the file: to a temporary file in the same folder, then renamed over ``path``."""
        header = self._header()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(header)
                for t in self._tensors.values():
                    written = 0
                    for chunk in t.produce():
                        view = memoryview(chunk).cast("B")
                        fh.write(view)
                        written += view.nbytes
                        del view, chunk
                    if written != t.nbytes:
                        raise ValueError(f"tensor {t.name!r}: produced {written} bytes, expected {t.nbytes}")
                    pad = align_up(t.nbytes, self.alignment) - t.nbytes
                    if pad:
                        fh.write(bytes(pad))
                fh.flush()
                os.fsync(fh.fileno())
            os.chmod(tmp_name, 0o644)
            os.replace(tmp_name, self.path)
        except BaseException:
            try:
                os.unlink(tmp_name)
            except OSError:
                pass
            raise
        return self.path
