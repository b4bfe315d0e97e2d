"""The native BitNet engine: GGUF reader, C compute core, tokenizer and generation."""

from __future__ import annotations

from pathlib import Path

from neuro_bitnet.engine.options import DEFAULT_CTX_SIZE
from neuro_bitnet.errors import EngineError

__all__ = ["load_model", "EngineError"]


def load_model(
    path: str | Path, threads: int | None = None, ctx_size: int = DEFAULT_CTX_SIZE, head: str | None = None,
    isa: str | None = None,
    parallel: int | None = 1,
    kv_cache: str | None = None,
):
    """Load a BitNet GGUF file. ``threads=None`` uses one thread per physical core.

    ``head`` selects how the output layer runs: "q4" (the default: a 4-bit copy of the head
    ranks the vocabulary, its 128 best candidates are recomputed exactly), "q8" (the same with an
    int8 copy) or "exact" (the file's own F16/BF16/F32 values only). ``None`` takes the
    environment variable ``NEURO_BITNET_HEAD``, else the default.

    ``isa`` picks the C kernels: "auto" (the best this CPU runs), "amx", "avx512vnni", "avx2" or
    "portable"; ``None`` takes the ``isa`` setting (``NEURO_BITNET_ISA``, else "auto").

    ``parallel`` is the number of KV slots, each of ``ctx_size`` positions: how many sequences a
    :class:`neuro_bitnet.engine.batch.BatchScheduler` runs together (``generate`` uses slot 0).
    Slots take memory only once used. ``None`` picks a number for this machine
    (``engine.parallel.default_parallel``: two per physical core, at most four, as many as half
    the available memory holds at full context); an explicit number more than that memory holds
    at full context raises EngineError (one slot always loads).

    ``kv_cache`` is the element type of the KV cache: "f16" (the default: half the memory and
    the bytes attention reads per token) or "f32"; ``None`` takes the ``kv_cache`` setting
    (``NEURO_BITNET_KV_CACHE``, else the default).
    """
    from neuro_bitnet.config import load_settings, setting
    from neuro_bitnet.engine.heads import DEFAULT_HEAD
    from neuro_bitnet.engine.model import BitNetModel
    from neuro_bitnet.engine.threads import physical_cores

    if threads is None:
        threads = physical_cores()
    if threads < 1:
        raise EngineError("threads must be >= 1")
    head = head or setting("head") or DEFAULT_HEAD
    settings = load_settings(isa=isa, kv_cache=kv_cache)
    return BitNetModel(path, threads=threads, ctx_size=ctx_size, head=head, isa=settings.isa, parallel=parallel,
                       kv_cache=settings.kv_cache)
