"""Settings of the daemon: command-line values with environment-variable defaults."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 11435
DEFAULT_CTX_SIZE = 4096
DEFAULT_MAX_TOKENS = 512  # when a request does not say
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_QUEUE = 128  # requests waiting for the model before new ones get 503
DEFAULT_SHUTDOWN_GRACE = 30.0  # seconds SIGTERM waits for in-flight answers
DEFAULT_MAX_CONNECTIONS = 512  # open connections; at the limit the oldest idle one is closed
DEFAULT_READ_TIMEOUT = 30.0  # seconds for a request head to arrive, and again for its body


def env_host() -> str:
    """``NEURO_DAEMON_HOST`` or the loopback address."""
    return os.environ.get("NEURO_DAEMON_HOST") or DEFAULT_HOST


def env_port() -> int:
    """``NEURO_DAEMON_PORT`` or 11435."""
    from neuro_bitnet.errors import ConfigError

    raw = os.environ.get("NEURO_DAEMON_PORT")
    if not raw:
        return DEFAULT_PORT
    try:
        port = int(raw)
    except ValueError:
        raise ConfigError(f"NEURO_DAEMON_PORT={raw!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"NEURO_DAEMON_PORT={raw!r} is outside 0..65535")
    return port


def env_url() -> str:
    """The daemon URL the environment points to (``NEURO_DAEMON_URL`` or host and port)."""
    url = os.environ.get("NEURO_DAEMON_URL")
    if url:
        return url.rstrip("/")
    return base_url(env_host(), env_port())


def base_url(host: str, port: int) -> str:
    """``http://host:port`` (IPv6 literals bracketed; a wildcard bind maps to loopback)."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def check_api_key(key: str) -> str:
    """``key`` if it is usable as a bearer token (visible ASCII, no spaces), else a ConfigError."""
    from neuro_bitnet.errors import ConfigError

    if not key:
        raise ConfigError("the API key is empty: give a real key (or leave --api-key out to serve without one)")
    bad = next((c for c in key if not "!" <= c <= "~"), None)
    if bad is not None:
        what = "a space" if bad == " " else "whitespace" if bad.isspace() else f"the character {bad!r}"
        raise ConfigError(f"the API key contains {what}: use visible ASCII characters only "
                          "(letters, digits, punctuation), e.g. from `python -c 'import secrets; "
                          "print(secrets.token_urlsafe(32))'`")
    return key


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
    storage: Path | None = None
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
