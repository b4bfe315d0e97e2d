"""Fixtures of the model-manager tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.hubserver import HubServer, hub_env


@pytest.fixture
def env(hub: HubServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The environment pointed at the loopback hub, with empty caches and no token."""
    monkeypatch.delenv("HF_TOKEN", raising=False)
    for key, value in hub_env(hub, tmp_path).items():
        monkeypatch.setenv(key, value)
    return tmp_path
