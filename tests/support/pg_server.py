"""A real PostgreSQL server with pgvector for the store tests, from the `pgserver` wheel.

One server per test session, on a Unix socket only (no TCP port). PostgreSQL refuses to run as
root; as root, pgserver runs it as the system user `pgserver` (created on first use with useradd).
That user must reach the data directory, so it lives in its own directory under the system tmp dir
(world-traversable), not under pytest's basetemp, which pytest keeps at mode 0700.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

_names = itertools.count(1)


class PgServer:
    """A running server; `new_database()` gives each test an empty database of its own."""

    def __init__(self) -> None:
        import pgserver

        self.base = Path(tempfile.mkdtemp(prefix="neuro-pg-"))
        self.base.chmod(0o755)
        self.server = pgserver.get_server(self.base / "pgdata", cleanup_mode="stop")
        self.admin_url = self.server.get_uri()

    def url(self, database: str) -> str:
        """The admin URL pointed at another database."""
        parts = urlsplit(self.admin_url)
        return urlunsplit(parts._replace(path=f"/{database}"))

    def new_database(self) -> str:
        """A fresh, empty database (no extension yet) and its URL."""
        import psycopg

        name = f"t{os.getpid()}_{next(_names)}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self) -> None:
        """Stop the server and remove its files."""
        self.server.cleanup()
        shutil.rmtree(self.base, ignore_errors=True)
