"""Settings resolution: command-line flags > environment variables > defaults, in one place."""

from __future__ import annotations

import os
import threading
import time
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
ISA_CHOICES = ("auto", "amx", "avx512vnni", "avx2", "portable")
TOKENIZER_CHOICES = ("auto", "tokenizers")  # auto: tiktoken for Llama-3 style vocabularies
DEFAULT_ISA = "auto"
# Element type of the KV cache (keys and values of every position): f16 halves its memory and
# the bytes attention reads per token (README: effect on the logits, measured).
KV_CACHE_CHOICES = ("f16", "f32")
DEFAULT_KV_CACHE = "f16"
# Where the daemon listens, and where clients look for it.
DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 11435
# A storage setting starting with one of these names a PostgreSQL database, not a directory.
DATABASE_URL_SCHEMES = ("postgresql://", "postgres://")

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
    "model": "NEURO_BITNET_MODEL",
    "head": "NEURO_BITNET_HEAD",
    "embedder": "NEURO_BITNET_EMBEDDER",
    "storage": "NEURO_BITNET_STORAGE",
    "daemon_host": "NEURO_DAEMON_HOST",
    "daemon_port": "NEURO_DAEMON_PORT",
    "daemon_url": "NEURO_DAEMON_URL",
    "daemon_api_key": "NEURO_DAEMON_API_KEY",
    "debug": "NEURO_BITNET_DEBUG",
    "tokenizer": "NEURO_BITNET_TOKENIZER",
    "head_cache": "NEURO_BITNET_HEAD_CACHE",
    "kv_cache": "NEURO_BITNET_KV_CACHE",
}


def default_models_dir() -> Path:
    """The platform cache dir for models (`~/.cache/neuro-bitnet/models` on Linux)."""
    return Path(platformdirs.user_cache_dir(APP_NAME)) / "models"


def default_storage_dir() -> Path:
    """The default index directory (`~/.local/share/neuro-bitnet/index` on Linux)."""
    return Path(platformdirs.user_data_dir(APP_NAME)) / "index"


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
    model: str | None = None  # catalog id, alias or .gguf path; None: the catalog's default
    head: str | None = None  # output-head precision; None: the engine's default
    embedder: str | None = None  # retrieval embedder; None: the registry's default
    storage: Path | str | None = None  # index directory or postgresql:// URL; None: default_storage_dir()
    daemon_host: str = DEFAULT_HOST
    daemon_port: int = DEFAULT_PORT
    daemon_url: str | None = None  # where clients find the daemon; None: daemon_host and daemon_port
    daemon_api_key: str | None = None
    debug: bool = False  # tracebacks on errors, as --verbose
    tokenizer: str = "auto"  # the BPE encoder: "auto" (tiktoken where it applies) or "tokenizers"
    head_cache: bool = True  # keep quantized heads in the cache dir between loads
    kv_cache: str = DEFAULT_KV_CACHE  # the KV cache's element type: "f16" or "f32"
    sources: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    def source(self, name: str) -> str:
        """Where setting `name` came from: "flag", "env" or "default"."""
        return self.sources.get(name, "default")


def _path(value: str, name: str) -> Path:
    return Path(value).expanduser()


def _storage(value: str, name: str) -> Path | str:
    """An index directory, or a database URL kept as given (a Path would fold its `//`)."""
    value = value.strip()
    return value if value.lower().startswith(DATABASE_URL_SCHEMES) else Path(value).expanduser()


def _endpoint(value: str, name: str) -> str:
    value = value.strip().rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise ConfigError(f"{name} must be an http(s) URL, got {value!r}")
    return value


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


def _kv_cache(value: str, name: str) -> str:
    kind = value.strip().lower()
    if kind not in KV_CACHE_CHOICES:
        raise ConfigError(f"{name} must be one of {', '.join(KV_CACHE_CHOICES)}, got {value!r}")
    return kind


def _text(value: str, name: str) -> str:
    return value.strip()


def _port(value: str, name: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise ConfigError(f"{name}={value!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{name}={value!r} is outside 0..65535")
    return port


def _url(value: str, name: str) -> str:
    return value.strip().rstrip("/")


def _flag(value: str, name: str) -> bool:
    return bool(value.strip())


def _on_off(value: str, name: str) -> bool:
    """A switch that is on unless set to 0 (or false/no/off)."""
    return value.strip().lower() not in ("0", "false", "no", "off")


def _tokenizer(value: str, name: str) -> str:
    choice = value.strip().lower()
    if choice not in TOKENIZER_CHOICES:
        raise ConfigError(f"{name} must be one of {', '.join(TOKENIZER_CHOICES)}, got {value!r}")
    return choice


def check_api_key(key: str, name: str = "") -> str:
    """``key`` if it is usable as a bearer token (visible ASCII, no spaces), else a ConfigError
    (``name``: the environment variable it came from, if any)."""
    what_key = f"the API key in {name}" if name else "the API key"
    if not key:
        raise ConfigError(f"{what_key} is empty: give a real key (or leave --api-key out to serve without one)")
    bad = next((c for c in key if not "!" <= c <= "~"), None)
    if bad is not None:
        what = "a space" if bad == " " else "whitespace" if bad.isspace() else f"the character {bad!r}"
        raise ConfigError(f"{what_key} contains {what}: use visible ASCII characters only "
                          "(letters, digits, punctuation), e.g. from `python -c 'import secrets; "
                          "print(secrets.token_urlsafe(32))'`")
    return key


_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "models_dir": _path,
    "catalog_path": _path,
    "bitnet_cli_path": _path,
    "hf_endpoint": _endpoint,
    "hf_token": _text,
    "timeout": _timeout,
    "retries": _retries,
    "isa": _isa,
    "model": _text,
    "head": _text,
    "embedder": _text,
    "storage": _storage,
    "daemon_host": _text,
    "daemon_port": _port,
    "daemon_url": _url,
    "daemon_api_key": check_api_key,
    "debug": _flag,
    "tokenizer": _tokenizer,
    "head_cache": _on_off,
    "kv_cache": _kv_cache,
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
        "model": None,
        "head": None,
        "embedder": None,
        "storage": default_storage_dir(),
        "daemon_host": DEFAULT_HOST,
        "daemon_port": DEFAULT_PORT,
        "daemon_url": None,
        "daemon_api_key": None,
        "debug": False,
        "tokenizer": "auto",
        "head_cache": True,
        "kv_cache": DEFAULT_KV_CACHE,
    }


def load_settings(**overrides: Any) -> Settings:
    """Resolve settings: keyword overrides (flags; None means "not given") > env > defaults."""
    names = {f.name for f in fields(Settings)} - {"sources"}
    unknown = set(overrides) - names
    if unknown:
        raise TypeError(f"unknown setting(s): {', '.join(sorted(unknown))}")
    values = _defaults()
    sources = dict.fromkeys(values, "default")
    for name in ENV_VARS:
        found, value = _from_env(name)
        if found:
            values[name] = value
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


# Values taken as they are (an API key of spaces is refused, not mistaken for no key).
_VERBATIM = {"daemon_api_key"}


def _from_env(name: str) -> tuple[bool, Any]:
    """(True, parsed value) when setting ``name``'s environment variable is set, else (False, None)."""
    var = ENV_VARS[name]
    raw = os.environ.get(var, "")
    if name not in _VERBATIM:
        raw = raw.strip()
    return (True, _PARSERS[name](raw, var)) if raw else (False, None)


def env_value(name: str) -> Any:
    """Setting ``name`` from its environment variable, None when that is not set."""
    return _from_env(name)[1]


def setting(name: str) -> Any:
    """One setting from its environment variable, else its default (as :func:`load_settings`
    resolves it, without reading the other variables)."""
    found, value = _from_env(name)
    return value if found else _defaults()[name]


# -- the daemon's address (read by `neuro serve` and by its clients) ---------------------------
def env_host() -> str:
    """``NEURO_DAEMON_HOST`` or the loopback address."""
    return setting("daemon_host")


def env_port() -> int:
    """``NEURO_DAEMON_PORT`` or 11435."""
    return setting("daemon_port")


def env_url() -> str:
    """The daemon URL the environment points to (``NEURO_DAEMON_URL`` or host and port)."""
    return setting("daemon_url") or base_url(env_host(), env_port())


def env_api_key() -> str | None:
    """``NEURO_DAEMON_API_KEY``, if set."""
    return setting("daemon_api_key")


def base_url(host: str, port: int) -> str:
    """``http://host:port`` (IPv6 literals bracketed; a wildcard bind maps to loopback)."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


# -- a pause hook for tests (not a setting: `neuro config` does not show it) ---------------------
# Tests that must act while work is still in progress (press Stop during an answer, hang up on a
# stream, kill -9 an indexer, kill a replica) would otherwise race the clock. They set this
# variable to a directory and create a file named after a pause point in it; the code then holds
# at that point until the file is removed. Unset (always, outside tests), a pause point costs one
# environment lookup.
TEST_PAUSE_ENV = "NEURO_BITNET_TEST_PAUSE"


def pause_point(name: str, cancelled: threading.Event | None = None) -> None:
    """Test-only: while ``$NEURO_BITNET_TEST_PAUSE/<name>`` exists, create ``<name>.reached`` next
    to it (so the test knows the work got here) and wait until the file is removed or
    ``cancelled`` is set."""
    directory = os.environ.get(TEST_PAUSE_ENV)
    if not directory:
        return
    hold = Path(directory) / name
    if not hold.exists():
        return
    (Path(directory) / f"{name}.reached").touch()
    while hold.exists():
        if cancelled is None:
            time.sleep(0.02)
        elif cancelled.wait(0.02):
            return
