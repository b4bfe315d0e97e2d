"""Settings resolution: command-line flags > environment variables > defaults, in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

import platformdirs

from neuro_bitnet.errors import ConfigError

APP_NAME = "neuro-bitnet"
DEFAULT_HF_ENDPOINT = "https://huggingface.co"
DEFAULT_TIMEOUT = 30.0
DEFAULT_RETRIES = 3
# Kernel sets of the C core: "auto" takes the best one the CPU runs.
ISA_CHOICES = ("auto", "avx2", "portable")
DEFAULT_ISA = "auto"
# Where the daemon listens, and where clients look for it.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 11435

# Setting name -> environment variable that can set it.
ENV_VARS: dict[str, str] = {
    "models_dir": "NEURO_BITNET_MODELS_DIR",
    "bitnet_cli_path": "BITNET_CLI_PATH",
    "hf_endpoint": "HF_ENDPOINT",
    "hf_token": "HF_TOKEN",
    "catalog_path": "NEURO_BITNET_CATALOG",
    "timeout": "NEURO_BITNET_TIMEOUT",
    "retries": "NEURO_BITNET_DOWNLOAD_RETRIES",
    "isa": "NEURO_BITNET_ISA",
}


def default_models_dir() -> Path:
    """The platform cache dir for models (`~/.cache/neuro-bitnet/models` on Linux)."""
    return Path(platformdirs.user_cache_dir(APP_NAME)) / "models"


def default_catalog_path() -> Path:
    """The user catalog file (`~/.config/neuro-bitnet/models.toml` on Linux)."""
    return Path(platformdirs.user_config_dir(APP_NAME)) / "models.toml"


@dataclass(frozen=True)
class Settings:
    """Resolved settings. `sources` says where each value came from: flag, env or default."""

    models_dir: Path
    catalog_path: Path
    hf_endpoint: str = DEFAULT_HF_ENDPOINT
    hf_token: str | None = None
    bitnet_cli_path: Path | None = None
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    isa: str = DEFAULT_ISA
    sources: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def source(self, name: str) -> str:
        """Where setting `name` came from: "flag", "env" or "default"."""
        return self.sources.get(name, "default")


def _path(value: str, name: str) -> Path:
    return Path(value).expanduser()


def _endpoint(value: str, name: str) -> str:
    value = value.strip().rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise ConfigError(f"{name} must be an http(s) URL, got {value!r}")
    return value


def _token(value: str, name: str) -> str:
    return value.strip()


def _timeout(value: str, name: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise ConfigError(f"{name} must be a positive number of seconds, got {value!r}")
    return seconds


def _retries(value: str, name: str) -> int:
    try:
        count = int(value)
    except ValueError:
        count = -1
    if count < 0:
        raise ConfigError(f"{name} must be a whole number >= 0, got {value!r}")
    return count


def _isa(value: str, name: str) -> str:
    isa = value.strip().lower()
    if isa not in ISA_CHOICES:
        raise ConfigError(f"{name} must be one of {', '.join(ISA_CHOICES)}, got {value!r}")
    return isa


_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "models_dir": _path,
    "catalog_path": _path,
    "bitnet_cli_path": _path,
    "hf_endpoint": _endpoint,
    "hf_token": _token,
    "timeout": _timeout,
    "retries": _retries,
    "isa": _isa,
}


def _defaults() -> dict[str, Any]:
    return {
        "models_dir": default_models_dir(),
        "catalog_path": default_catalog_path(),
        "hf_endpoint": DEFAULT_HF_ENDPOINT,
        "hf_token": None,
        "bitnet_cli_path": None,
        "timeout": DEFAULT_TIMEOUT,
        "retries": DEFAULT_RETRIES,
        "isa": DEFAULT_ISA,
    }


def load_settings(**overrides: Any) -> Settings:
    """Resolve settings: keyword overrides (flags; None means "not given") > env > defaults."""
    names = {f.name for f in fields(Settings)} - {"sources"}
    unknown = set(overrides) - names
    if unknown:
        raise TypeError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    values = _defaults()
    sources = dict.fromkeys(values, "default")
    for name, var in ENV_VARS.items():
        raw = os.environ.get(var, "").strip()
        if raw:
            values[name] = _PARSERS[name](raw, var)
            sources[name] = "env"
    for name, value in overrides.items():
        if value is None:
            continue
        if isinstance(value, str):
            value = _PARSERS[name](value, "--" + name.replace("_", "-"))
        elif isinstance(value, Path):
            value = value.expanduser()
        values[name] = value
        sources[name] = "flag"
    return Settings(**values, sources=sources)


# -- the daemon's address (read by `neuro serve` and by its clients) ---------------------------
def env_host() -> str:
    """``NEURO_DAEMON_HOST`` or the loopback address."""
    return os.environ.get("NEURO_DAEMON_HOST") or DEFAULT_HOST


def env_port() -> int:
    """``NEURO_DAEMON_PORT`` or 11435."""
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
