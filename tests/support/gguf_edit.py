"""Copies of a GGUF file with some metadata or tensor bytes changed: hostile or odd test models."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np

from neuro_bitnet.engine.gguf import GGUFFile
from neuro_bitnet.engine.gguf_writer import GGUFWriter


def rewrite_gguf(
    src: Path,
    dst: Path,
    *,
    set_keys: dict[str, Any] | None = None,
    drop_keys: tuple[str, ...] = (),
    rename_prefix: tuple[str, str] | None = None,
    tensor: Callable[[str, np.ndarray], np.ndarray | None] | None = None,
) -> Path:
    """Write ``dst``: ``src`` with keys set/dropped, key prefix ``old`` renamed to ``new``, and
    ``tensor(name, bytes)`` (uint8 copy) returning replacement bytes for the tensors it changes."""
    set_keys = dict(set_keys or {})
    with GGUFFile(src) as f:
        meta = dict(f.metadata)
        for key in drop_keys:
            meta.pop(key, None)
        if rename_prefix is not None:
            old, new = rename_prefix
            meta = {new + k[len(old):] if k.startswith(old) else k: v for k, v in meta.items()}
        meta.update(set_keys)
        arch = meta.pop("general.architecture")
        meta.pop("general.alignment", None)
        writer = GGUFWriter(dst, arch)
        for key, value in meta.items():
            writer.add(key, value)
        for name, info in f.tensors.items():
            data = np.array(f.raw(name), dtype=np.uint8)
            changed = tensor(name, data) if tensor is not None else None
            writer.add_raw_tensor(name, info.shape, info.ggml_type, data if changed is None else changed)
        return writer.write()
