"""Settings of the daemon: command-line values with environment-variable defaults."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from neuro_bitnet.config import DEFAULT_HOST, DEFAULT_PORT
from neuro_bitnet.engine.options import DEFAULT_MAX_TOKENS

DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_QUEUE = 128  # requests waiting for the model before new ones get 503
DEFAULT_SHUTDOWN_GRACE = 30.0  # seconds SIGTERM waits for in-flight answers
DEFAULT_MAX_CONNECTIONS = 512  # open connections; at the limit the oldest idle one is closed
DEFAULT_READ_TIMEOUT = 30.0  # seconds for a request head to arrive, and again for its body


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass
class ServerConfig:
    """Everything the HTTP app needs besides the model itself."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    api_key: str | None = None
    auto_translate: bool = False
    storage: Path | str | None = None  # index directory or postgresql:// URL
    default_max_tokens: int = DEFAULT_MAX_TOKENS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_queue: int = DEFAULT_MAX_QUEUE
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE
    pid_file: Path | None = None
    extra_aliases: list[str] = field(default_factory=list)
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    read_timeout: float = DEFAULT_READ_TIMEOUT
    allowed_hosts: list[str] = field(default_factory=list)  # Host names accepted besides loopback ones
    cors_origins: list[str] = field(default_factory=list)  # empty: no CORS headers at all
