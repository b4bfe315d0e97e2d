"""Shared pytest fixtures."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.hubserver import HubServer


@pytest.fixture
def hub() -> Iterator[HubServer]:
    """A loopback fake of the Hugging Face hub (see tests/hubserver.py)."""
    server = HubServer().start()
    try:
        yield server
    finally:
        server.stop()
