"""How the output layer (the head: n_vocab x n_embd, read once per generated token) runs.

"q4" and "q8" run a 4-bit (per 128-weight group) or int8 (per row) copy of the head built at
load time; it ranks the vocabulary, then the 128 best candidates are recomputed from the file's
own values, so greedy decoding and the top of every sampling distribution see exact logits.
"exact" uses the file's values for every row (slowest: the F16 head is 657 MB for 2B-4T).

Building the q4/q8 copy reads the whole float head and takes most of a second, so the copy is kept
in the cache directory (``~/.cache/neuro-bitnet/heads`` on Linux, one file per model path and
head) with the model file's size and mtime and a CRC-32 of its bytes; it is used only when all of
them match, and rebuilt (and rewritten) otherwise. ``NEURO_BITNET_HEAD_CACHE=0`` turns it off.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import struct
import tempfile
import zlib
from pathlib import Path

from neuro_bitnet.config import setting

HEADS = ("q4", "q8", "exact")
DEFAULT_HEAD = "q4"

# ------------------------------------------------------------------------------ head cache
CACHE_ENV = "NEURO_BITNET_HEAD_CACHE"  # "0" turns the cache off (read through config.setting)
_MAGIC = b"NBHEAD\x00\x01"
# magic, head, n_vocab, n_embd, model size, model mtime_ns, codes bytes, scales bytes, crc32 x2
_HEADER = struct.Struct("<8s8sIIQQQQII")


def head_cache_dir() -> Path:
    """``heads`` under the platform cache dir (``~/.cache/neuro-bitnet/heads`` on Linux)."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("neuro-bitnet")) / "heads"


def _cache_file(model: Path, head: str) -> Path:
    key = hashlib.sha256(str(model.resolve()).encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return head_cache_dir() / f"{key}.{head}"


def _identity(model: Path) -> tuple[int, int]:
    st = model.stat()
    return st.st_size, st.st_mtime_ns


def load_head(model: Path, head: str, n_vocab: int, n_embd: int) -> tuple[memoryview, memoryview] | None:
    """(codes, scales) of ``model``'s cached quantized head, as read-only views of the mapped cache
    file (the core uses them in place), or None when there is no cache, it belongs to another
    version of the file (size or mtime changed) or it is corrupt."""
    if head not in ("q4", "q8") or not setting("head_cache"):
        return None
    try:
        size, mtime = _identity(model)
        with open(_cache_file(model, head), "rb") as f:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):  # ValueError: an empty file cannot be mapped
        return None
    view = memoryview(mapped)
    if len(view) >= _HEADER.size:
        magic, kind, vocab, embd, m_size, m_mtime, n_codes, n_scales, crc_c, crc_s = _HEADER.unpack_from(view)
        if (magic, kind.rstrip(b"\0"), vocab, embd, m_size, m_mtime) == (
            _MAGIC, head.encode(), n_vocab, n_embd, size, mtime
        ) and len(view) == _HEADER.size + n_codes + n_scales:
            codes = view[_HEADER.size:_HEADER.size + n_codes]
            scales = view[_HEADER.size + n_codes:]
            if zlib.crc32(codes) == crc_c and zlib.crc32(scales) == crc_s:
                return codes, scales
            codes.release()
            scales.release()
    view.release()
    mapped.close()
    return None


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
        header = _HEADER.pack(_MAGIC, head.encode(), n_vocab, n_embd, size, mtime, len(codes),
                              len(scales), zlib.crc32(codes), zlib.crc32(scales))
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".head-")
        with os.fdopen(fd, "wb") as f:
            f.write(header)
            f.write(codes)
            f.write(scales)
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
