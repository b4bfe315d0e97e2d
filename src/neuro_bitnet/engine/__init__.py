"""The native BitNet engine: GGUF reader, C compute core, tokenizer and generation."""

from __future__ import annotations

from pathlib import Path

from neuro_bitnet.errors import EngineError

__all__ = ["load_model", "EngineError"]


def load_model(path: str | Path, threads: int | None = None, ctx_size: int = 4096, head: str = "q8"):
    """Load a BitNet GGUF file. ``threads=None`` uses one thread per physical core.

    ``head`` selects how the output layer runs: "q8" (int8 copy of the head, the fast default)
    or "exact" (the file's own F16/BF16/F32 values).
    """
    from neuro_bitnet.engine.model import BitNetModel
    from neuro_bitnet.engine.threads import physical_cores

    if threads is None:
        threads = physical_cores()
    if threads < 1:
        raise EngineError("threads must be >= 1")
    return BitNetModel(path, threads=threads, ctx_size=ctx_size, head=head)
