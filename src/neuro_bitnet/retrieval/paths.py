"""Where indexes live by default."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

ENV_STORAGE = "NEURO_BITNET_STORAGE"


def default_storage_dir() -> Path:
    """`NEURO_BITNET_STORAGE` if set, else the user data dir (`~/.local/share/neuro-bitnet/index`)."""
    env = os.environ.get(ENV_STORAGE, "").strip()
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_data_dir("neuro-bitnet")) / "index"


def resolve_storage(storage: str | Path | None) -> Path:
    """The storage dir given on the command line, or the default."""
    return Path(storage).expanduser() if storage else default_storage_dir()
