"""How many KV slots (sequences decoded together) a model gets by default.

Decoding one sequence is bound by reading the weights; a batch of several reads them once for
all, so a few slots multiply a shared model's throughput for little extra compute. Past a few per
core the compute dominates and each sequence just gets slower. Every slot can fill its whole
context, so the slots' keys and values must also fit in memory (they take it only once used):
one rule (:func:`slots_that_fit`) bounds the default and refuses an explicit number past it.
"""

from __future__ import annotations

import os

from neuro_bitnet.engine.architecture import HParams
from neuro_bitnet.errors import EngineError

KV_VALUE_BYTES = 4  # the cache is reserved at float32 size even when f16: exact scoring writes f32
SLOTS_PER_CORE = 2
MAX_DEFAULT_SLOTS = 4
MEMORY_SHARE = 0.5  # of the available memory that full slots may take


def kv_bytes_per_token(hparams: HParams) -> int:
    """Bytes of keys and values one position of one sequence takes."""
    return 2 * hparams.n_layer * hparams.n_head_kv * hparams.head_dim * KV_VALUE_BYTES


def available_memory() -> int | None:
    """Bytes of memory available to new allocations (Linux's MemAvailable), None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def slots_that_fit(hparams: HParams, ctx_size: int, available: int | None = None) -> int | None:
    """How many slots of ``ctx_size`` positions, all full, the KV budget holds (MEMORY_SHARE of
    the available memory; ``available`` in bytes, None: measure it), at least one; None when
    the memory is unknown."""
    memory = available if available is not None else available_memory()
    if memory is None:
        return None
    return max(1, int(memory * MEMORY_SHARE) // (kv_bytes_per_token(hparams) * ctx_size))


def default_parallel(hparams: HParams, ctx_size: int, *, cores: int | None = None,
                     available: int | None = None) -> int:
    """Two slots per physical core, at most four, and no more than :func:`slots_that_fit`."""
    from neuro_bitnet.engine.threads import physical_cores

    slots = min(MAX_DEFAULT_SLOTS, SLOTS_PER_CORE * (cores if cores is not None else physical_cores()))
    fit = slots_that_fit(hparams, ctx_size, available)
    return slots if fit is None else min(slots, fit)


def check_parallel(hparams: HParams, ctx_size: int, parallel: int, *, available: int | None = None) -> None:
    """EngineError when ``parallel`` slots, all full, do not fit :func:`slots_that_fit` (one
    slot always does, as for the default), naming the memory needed and the memory there is."""
    memory = available if available is not None else available_memory()
    if memory is None:
        return
    fit = slots_that_fit(hparams, ctx_size, memory)
    if fit is None or parallel <= fit:
        return
    need = parallel * ctx_size * kv_bytes_per_token(hparams)
    raise EngineError(
        f"{parallel} parallel slots of {ctx_size} positions need {_gib(need)} of memory for their KV cache, "
        f"but {_gib(memory * MEMORY_SHARE)} is there for it ({MEMORY_SHARE:.0%} of the {_gib(memory)} available); "
        f"at most {fit} fit: lower --parallel or --ctx-size")


def _gib(n: float) -> str:
    return f"{n / 2**30:.1f} GiB"
