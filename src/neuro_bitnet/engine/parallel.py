"""How many KV slots (sequences decoded together) a model gets by default.

Decoding one sequence is bound by reading the weights; a batch of several reads them once for
all, so a few slots multiply a shared model's throughput for little extra compute. Past a few per
core the compute dominates and each sequence just gets slower. Every slot can fill its whole
context, so the slots' keys and values must also fit in memory (they take it only once used).
"""

from __future__ import annotations

import os

from neuro_bitnet.engine.architecture import HParams

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


def default_parallel(hparams: HParams, ctx_size: int, *, cores: int | None = None,
                     available: int | None = None) -> int:
    """Two slots per physical core, at most four, and no more than half the available memory
    holds when every slot fills its ``ctx_size`` positions; at least one."""
    from neuro_bitnet.engine.threads import physical_cores

    slots = min(MAX_DEFAULT_SLOTS, SLOTS_PER_CORE * (cores if cores is not None else physical_cores()))
    memory = available if available is not None else available_memory()
    if memory is not None:
        slots = min(slots, int(memory * MEMORY_SHARE) // (kv_bytes_per_token(hparams) * ctx_size))
    return max(1, slots)
