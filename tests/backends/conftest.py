"""Fixtures for the backend tests: a real llama.cpp binary and a tiny model it can run."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from support.llama_cli import ensure_llama_cli
from support.tiny_bitnet import write_tiny_bitnet_tq2


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test that needs the llama.cpp binary is `slow` (its first build takes minutes)."""
    for item in items:
        if "llama_cli" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def llama_cli(pytestconfig: pytest.Config) -> Path:
    """llama.cpp's `llama-completion`, built once from the PyPI sdist and cached (slow the first
    time: its progress is shown on the terminal even though pytest captures output)."""
    capture = pytestconfig.pluginmanager.getplugin("capturemanager")

    def progress(message: str) -> None:
        with capture.global_and_fixture_disabled():
            print(f"\n{message}", file=sys.stderr, flush=True)

    return ensure_llama_cli(progress)


@pytest.fixture(scope="session")
def tiny_bitnet_tq2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random arch-`bitnet` model with TQ2_0 weights (runs in llama.cpp and in our engine)."""
    return write_tiny_bitnet_tq2(tmp_path_factory.mktemp("tiny-bitnet") / "tiny-bitnet-tq2_0.gguf")
