"""Fixtures for the backend tests: a real llama.cpp binary and a tiny model it can run."""

from __future__ import annotations

from pathlib import Path

import pytest

from support.llama_cli import ensure_llama_cli
from support.tiny_bitnet import write_tiny_bitnet_tq2


@pytest.fixture(scope="session")
def llama_cli() -> Path:
    """llama.cpp's `llama-completion`, built once from the PyPI sdist and cached (slow the first time)."""
    return ensure_llama_cli()


@pytest.fixture(scope="session")
def tiny_bitnet_tq2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random arch-`bitnet` model with TQ2_0 weights (runs in llama.cpp and in our engine)."""
    return write_tiny_bitnet_tq2(tmp_path_factory.mktemp("tiny-bitnet") / "tiny-bitnet-tq2_0.gguf")
