"""Fixtures of the CLI tests."""

from __future__ import annotations

import os

import pytest


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    """An environment with no daemon, no network and empty caches."""
    env = dict(os.environ)
    env.update(
        NEURO_BITNET_MODELS_DIR=str(tmp_path / "models"),
        NEURO_DAEMON_URL="http://127.0.0.1:9",  # nothing listens on the discard port
        HF_ENDPOINT="http://127.0.0.1:9",
        NEURO_BITNET_STORAGE=str(tmp_path / "storage"),
        XDG_STATE_HOME=str(tmp_path / "state"),  # chat history
    )
    for var in ("NEURO_BITNET_CATALOG", "NEURO_BITNET_WEB_PROVIDER", "NEURO_DAEMON_API_KEY"):
        env.pop(var, None)
    return env
