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


@pytest.fixture(scope="session")
def pg_server():
    """One real PostgreSQL + pgvector server for the session (support/pg_server.py)."""
    pytest.importorskip("pgserver", reason="the PostgreSQL tests need the dev extra (pgserver)")
    pytest.importorskip("psycopg", reason="the PostgreSQL tests need the dev extra (psycopg)")
    from support.pg_server import PgServer

    server = PgServer()
    yield server
    server.stop()
