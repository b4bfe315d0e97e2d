"""Fixtures for retrieval tests: tiny ONNX embedders and an isolated cache/storage."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.tiny_embedder import build_tiny_embedder


@pytest.fixture(scope="session")
def tiny_embedder_dir(tmp_path_factory) -> Path:
    return build_tiny_embedder(tmp_path_factory.mktemp("tiny-embedder"))


@pytest.fixture(scope="session")
def other_embedder_dir(tmp_path_factory) -> Path:
    return build_tiny_embedder(tmp_path_factory.mktemp("other-embedder"), seed=7)


@pytest.fixture
def tiny_embedder(tiny_embedder_dir):
    from neuro_bitnet.retrieval.embedders import OnnxEmbedder

    return OnnxEmbedder(tiny_embedder_dir)


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path, monkeypatch):
    """Keep caches and default storage inside the test's tmp dir."""
    monkeypatch.setenv("NEURO_BITNET_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("NEURO_BITNET_STORAGE", str(tmp_path / "default-storage"))
    monkeypatch.delenv("NEURO_BITNET_EMBEDDER", raising=False)


@pytest.fixture(params=["sqlite", "postgres"])
def storage_spec(request, tmp_path):
    """Where a test's index lives, once per store: a directory (SQLite) or the URL of an empty
    PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "idx"
    return request.getfixturevalue("pg_server").new_database()
