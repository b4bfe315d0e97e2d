"""Read safetensors checkpoints tensor by tensor, a slab of rows at a time.

A safetensors file is an 8-byte little-endian header length, a JSON header naming each tensor's
dtype, shape and byte range, then the raw little-endian data. Tensors are read with positioned
reads (no memory map), so the resident memory is the slab being converted and nothing else.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neuro_bitnet.models.convert.errors import ConvertError

_MAX_HEADER = 100 << 20
# safetensors dtype -> numpy dtype (BF16 is read as its uint16 bits and widened by hand).
DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "I8": np.dtype("i1"),
    "I16": np.dtype("<i2"),
    "I32": np.dtype("<i4"),
    "I64": np.dtype("<i8"),
}
FLOAT_DTYPES = ("F64", "F32", "F16", "BF16")


@dataclass(frozen=True)
class TensorRef:
    """Where one tensor's bytes live."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    path: Path
    offset: int  # absolute file offset of the first byte
    nbytes: int

    @property
    def n_elements(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def is_float(self) -> bool:
        return self.dtype in FLOAT_DTYPES

    @property
    def itemsize(self) -> int:
        return DTYPES[self.dtype].itemsize


def read_header(path: Path) -> dict[str, TensorRef]:
    """The tensors of one .safetensors file; ConvertError if the header is malformed."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ConvertError(f"{path.name}: not a safetensors file (too short)")
            (n,) = struct.unpack("<Q", head)
            if n > min(_MAX_HEADER, size - 8):
                raise ConvertError(f"{path.name}: not a safetensors file (header length {n})")
            raw = f.read(n)
    except OSError as exc:
        raise ConvertError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise ConvertError(f"{path.name}: not a safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise ConvertError(f"{path.name}: safetensors header must be a JSON object")
    base = 8 + n
    tensors = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], tuple(int(d) for d in info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise ConvertError(f"{path.name}: malformed entry for tensor {name!r}") from None
        if dtype not in DTYPES:
            raise ConvertError(f"{path.name}: tensor {name} has unsupported dtype {dtype}")
        ref = TensorRef(name, dtype, shape, path, base + int(begin), int(end) - int(begin))
        if ref.nbytes != ref.n_elements * ref.itemsize or begin < 0 or base + end > size:
            raise ConvertError(f"{path.name}: tensor {name} has an inconsistent size or lies past the end")
        tensors[name] = ref
    return tensors


def shard_paths(model_dir: Path) -> list[Path]:
    """The checkpoint's .safetensors files: from model.safetensors.index.json, else every one."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            names = sorted(set(weight_map.values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            raise ConvertError(f"{index}: malformed safetensors index") from None
        missing = [n for n in names if not (model_dir / n).is_file()]
        if missing:
            raise ConvertError(f"{model_dir}: shard {missing[0]} listed in the index is missing")
        return [model_dir / n for n in names]
    paths = sorted(model_dir.glob("*.safetensors"))
    if not paths:
        raise ConvertError(f"{model_dir}: no .safetensors files (only safetensors checkpoints are supported)")
    return paths


class Checkpoint:
    """All tensors of a (possibly sharded) safetensors checkpoint, by name."""

    def __init__(self, model_dir: Path) -> None:
        self.dir = model_dir
        self.tensors: dict[str, TensorRef] = {}
        for path in shard_paths(model_dir):
            for name, ref in read_header(path).items():
                if name in self.tensors:
                    raise ConvertError(f"tensor {name} appears in two shards")
                self.tensors[name] = ref

    def __contains__(self, name: object) -> bool:
        return name in self.tensors

    def get(self, name: str) -> TensorRef:
        ref = self.tensors.get(name)
        if ref is None:
            raise ConvertError(f"{self.dir.name}: checkpoint has no tensor {name}")
        return ref

    @property
    def total_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())


def _pread(ref: TensorRef, start: int, nbytes: int) -> bytes:
    fd = os.open(ref.path, os.O_RDONLY)
    try:
        parts, pos, end = [], ref.offset + start, ref.offset + start + nbytes
        while pos < end:
            chunk = os.pread(fd, min(end - pos, 1 << 30), pos)
            if not chunk:
                raise ConvertError(f"{ref.path.name}: file ends inside tensor {ref.name}")
            parts.append(chunk)
            pos += len(chunk)
        return parts[0] if len(parts) == 1 else b"".join(parts)
    finally:
        os.close(fd)


def _decode(ref: TensorRef, raw: bytes, as_float32: bool) -> np.ndarray:
    arr = np.frombuffer(raw, dtype=DTYPES[ref.dtype])
    if not as_float32:
        return arr
    if ref.dtype == "BF16":
        return (arr.astype(np.uint32) << 16).view(np.float32)
    return arr.astype(np.float32)


def read_rows(ref: TensorRef, start: int, stop: int, *, as_float32: bool = True) -> np.ndarray:
    """Rows [start, stop) of a tensor viewed as (rows, cols) (1-D tensors: elements), float32
    for float tensors (BF16 widened exactly) or the raw dtype with ``as_float32=False``."""
    cols = ref.shape[-1] if len(ref.shape) > 1 else 1
    row_bytes = cols * ref.itemsize
    data = _decode(ref, _pread(ref, start * row_bytes, (stop - start) * row_bytes), as_float32 and ref.is_float)
    return data.reshape(stop - start, cols) if len(ref.shape) > 1 else data


def read_all(ref: TensorRef, *, as_float32: bool = True) -> np.ndarray:
    """The whole tensor in its shape (for small tensors: norms, scales, packed weights)."""
    data = _decode(ref, _pread(ref, 0, ref.nbytes), as_float32 and ref.is_float)
    return data.reshape(ref.shape)


def row_slabs(ref: TensorRef, slab_bytes: int, multiple: int = 1) -> Iterator[tuple[int, int]]:
    """(start, stop) row ranges of about ``slab_bytes`` each; ``start`` stays a multiple of
    ``multiple`` rows."""
    rows = ref.shape[0] if len(ref.shape) > 1 else ref.n_elements
    row_bytes = max(1, ref.nbytes // max(rows, 1))
    step = max(multiple, slab_bytes // row_bytes // multiple * multiple)
    for start in range(0, rows, step):
        yield start, min(rows, start + step)
