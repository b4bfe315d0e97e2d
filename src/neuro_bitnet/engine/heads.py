"""How the output layer (the head: n_vocab x n_embd, read once per generated token) runs.

"q4" and "q8" run a 4-bit (per 128-weight group) or int8 (per row) copy of the head built at
load time; it ranks the vocabulary, then the 128 best candidates are recomputed from the file's
own values, so greedy decoding and the top of every sampling distribution see exact logits.
"exact" uses the file's values for every row (slowest: the F16 head is 657 MB for 2B-4T).

Building the q4/q8 copy reads the whole float head and takes most of a second, so the copy is kept
in the cache directory (``~/.cache/neuro-bitnet/heads`` on Linux, one file per model path and
head) with the model file's path, size and mtime and a CRC-32 of its bytes; it is used only when
all of them match, and rebuilt (and rewritten) otherwise. The cache keeps the most recently used
heads of model files that still exist as they were, up to KEEP_BYTES; the others are deleted
whenever a head is stored, and :func:`forget` deletes a model's heads (``neuro model remove``).
``NEURO_BITNET_HEAD_CACHE=0`` turns the cache off.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
import tempfile
import time
import zlib
from pathlib import Path
from typing import NamedTuple

from neuro_bitnet.config import setting

HEADS = ("q4", "q8", "exact")
DEFAULT_HEAD = "q4"

# ------------------------------------------------------------------------------ head cache
CACHE_ENV = "NEURO_BITNET_HEAD_CACHE"  # "0" turns the cache off (read through config.setting)
_MAGIC = b"NBHEAD\x00\x02"
# magic, head, n_vocab, n_embd, model size, model mtime_ns, codes bytes, scales bytes, crc32 x2,
# path bytes; the codes start at _DATA (aligned for the core), the model's path follows the scales
_HEADER = struct.Struct("<8s8sIIQQQQIII")
_DATA = 128
KEEP_BYTES = 2 << 30  # the most recently used heads are kept up to this size (2B-4T's q4 head: 174 MB)
_STRAY_SECONDS = 3600  # a temporary file this old was left by a writer that died


def head_cache_dir() -> Path:
    """``heads`` under the platform cache dir (``~/.cache/neuro-bitnet/heads`` on Linux)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("neuro-bitnet")) / "heads"


def _cache_file(model: Path, head: str) -> Path:
    return head_cache_dir() / f"{_key(model)}.{head}"


def _key(model: Path) -> str:
    return hashlib.sha256(_path_bytes(model)).hexdigest()[:32]


def _path_bytes(model: Path) -> bytes:
    return str(model.resolve()).encode("utf-8", "surrogateescape")


def _identity(model: Path) -> tuple[int, int]:
    st = model.stat()
    return st.st_size, st.st_mtime_ns


def load_head(model: Path, head: str, n_vocab: int, n_embd: int) -> tuple[memoryview, memoryview] | None:
    """(codes, scales) of ``model``'s cached quantized head, as read-only views of the mapped cache
    file (the core uses them in place), or None when there is no cache, it belongs to another
    file or another version of it (path, size or mtime changed) or it is corrupt."""
    if head not in ("q4", "q8") or not setting("head_cache"):
        return None
    try:
        size, mtime = _identity(model)
        path = _cache_file(model, head)
        with open(path, "rb") as f:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):  # ValueError: an empty file cannot be mapped
        return None
    view = memoryview(mapped)
    header = _parse_header(view[:_DATA], len(view))
    if header is not None and header.matches(head, n_vocab, n_embd, size, mtime) and (
        view[header.path_offset:] == _path_bytes(model)
    ):
        codes = view[_DATA:_DATA + header.n_codes]
        scales = view[_DATA + header.n_codes:header.path_offset]
        if zlib.crc32(codes) == header.crc_codes and zlib.crc32(scales) == header.crc_scales:
            _touch(path)
            return codes, scales
        codes.release()
        scales.release()
    view.release()
    mapped.close()
    return None


class _Header(NamedTuple):
    head: str
    n_vocab: int
    n_embd: int
    model_size: int
    model_mtime: int
    n_codes: int
    n_scales: int
    crc_codes: int
    crc_scales: int
    n_path: int

    @property
    def path_offset(self) -> int:
        """Where the model's path starts (it ends the file)."""
        return _DATA + self.n_codes + self.n_scales

    def matches(self, head: str, n_vocab: int, n_embd: int, size: int, mtime: int) -> bool:
        return (self.head, self.n_vocab, self.n_embd, self.model_size, self.model_mtime) == (
            head, n_vocab, n_embd, size, mtime)


def _parse_header(first: bytes | memoryview, file_size: int) -> _Header | None:
    """The header of a cache file from its first _DATA bytes, or None when they are not the
    header of a whole cache file of ``file_size`` bytes in this version."""
    if len(first) < _DATA:
        return None
    magic, kind, *fields = _HEADER.unpack_from(first)
    header = _Header(kind.rstrip(b"\0").decode("ascii", "replace"), *fields)
    if magic != _MAGIC or file_size != header.path_offset + header.n_path:
        return None
    return header


def _touch(path: Path) -> None:
    """Mark a cache file as used now (its access time orders the cache for eviction)."""
    try:
        os.utime(path, ns=(time.time_ns(), path.stat().st_mtime_ns))
    except OSError:
        pass


def store_head(model: Path, head: str, n_vocab: int, n_embd: int, codes: bytes, scales: bytes) -> None:
    """Keep a built head for the next load. Best effort: a cache that cannot be written only
    means building the head again next time."""
    if head not in ("q4", "q8") or not setting("head_cache"):
        return
    tmp = None
    try:
        size, mtime = _identity(model)
        target = _cache_file(model, head)
        target.parent.mkdir(parents=True, exist_ok=True)
        model_path = _path_bytes(model)
        header = _HEADER.pack(_MAGIC, head.encode(), n_vocab, n_embd, size, mtime, len(codes),
                              len(scales), zlib.crc32(codes), zlib.crc32(scales), len(model_path))
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".head-")
        with os.fdopen(fd, "wb") as f:
            f.write(header.ljust(_DATA, b"\0"))
            f.write(codes)
            f.write(scales)
            f.write(model_path)
        os.replace(tmp, target)
        tmp = None
    except OSError:
        pass
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    prune()


def prune(keep_bytes: int | None = None) -> list[Path]:
    """Delete the cache files that cannot be used again (their model file is gone or changed,
    they are corrupt or of another version, or a dead writer's temporary file), then the least
    recently used others past ``keep_bytes`` (default KEEP_BYTES) in all; the most recently used
    one is always kept. Returns the deleted files."""
    keep_bytes = KEEP_BYTES if keep_bytes is None else keep_bytes
    folder = head_cache_dir()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    removed: list[Path] = []
    usable: list[tuple[int, int, Path]] = []  # (access time, size, path)
    for entry in entries:
        path = Path(entry.path)
        try:
            st = entry.stat(follow_symlinks=False)
            if entry.name.startswith(".head-"):
                if time.time() - st.st_mtime > _STRAY_SECONDS:
                    _unlink(path, removed)
            elif _still_valid(path):
                usable.append((st.st_atime_ns, st.st_size, path))
            else:
                _unlink(path, removed)
        except OSError:
            continue
    usable.sort(reverse=True)
    total = 0
    for i, (_, size, path) in enumerate(usable):
        total += size
        if i and total > keep_bytes:
            _unlink(path, removed)
    return removed


def _still_valid(path: Path) -> bool:
    """True when a cache file's header is whole and its model file exists as it was recorded
    (the CRC is checked when the head is loaded, not here: this reads only the ends)."""
    with open(path, "rb") as f:
        header = _parse_header(f.read(_DATA), os.fstat(f.fileno()).st_size)
        if header is None:
            return False
        f.seek(header.path_offset)
        model = Path(os.fsdecode(f.read(header.n_path)))
    if path.name != f"{_key(model)}.{header.head}":
        return False
    try:
        size, mtime = _identity(model)
    except OSError:
        return False
    return (header.model_size, header.model_mtime) == (size, mtime)


def forget(model: Path) -> list[Path]:
    """Delete ``model``'s cached heads (when the model file is removed); returns what was deleted."""
    removed: list[Path] = []
    for head in ("q4", "q8"):
        _unlink(_cache_file(model, head), removed)
    return removed


def _unlink(path: Path, removed: list[Path]) -> None:
    try:
        path.unlink()
        removed.append(path)
    except OSError:
        pass
