"""Where indexes live by default."""

from __future__ import annotations

from pathlib import Path

from neuro_bitnet.config import setting
from neuro_bitnet.retrieval.store import StorageSpec, is_database_url


def default_storage_dir() -> StorageSpec:
    """`NEURO_BITNET_STORAGE` if set (a directory or a postgresql:// URL), else the user data dir
    (`~/.local/share/neuro-bitnet/index`)."""
    return setting("storage")


def resolve_storage(storage: StorageSpec | None) -> StorageSpec:
    """The storage given on the command line (a directory or a postgresql:// URL), or the default."""
    if not storage:
        return default_storage_dir()
    return str(storage).strip() if is_database_url(storage) else Path(storage).expanduser()
