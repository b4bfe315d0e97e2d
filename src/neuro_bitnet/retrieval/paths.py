"""Where indexes live by default."""

from __future__ import annotations

from pathlib import Path

from neuro_bitnet.config import setting


def default_storage_dir() -> Path:
    """`NEURO_BITNET_STORAGE` if set, else the user data dir (`~/.local/share/neuro-bitnet/index`)."""
    return setting("storage")


def resolve_storage(storage: str | Path | None) -> Path:
    """The storage dir given on the command line, or the default."""
    return Path(storage).expanduser() if storage else default_storage_dir()
