"""The neuro daemon: an OpenAI-compatible HTTP server over one loaded model, and its client.

Client API (``neuro ask --backend daemon``): :func:`is_running`, :class:`DaemonClient`,
:func:`chat_stream`, :func:`complete_stream`; errors are :class:`DaemonError`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["DaemonClient", "DaemonError", "ServerConfig", "chat_stream", "complete_stream", "is_running"]

_LOCATIONS = {
    "DaemonClient": "neuro_bitnet.server.client",
    "chat_stream": "neuro_bitnet.server.client",
    "complete_stream": "neuro_bitnet.server.client",
    "is_running": "neuro_bitnet.server.client",
    "DaemonError": "neuro_bitnet.server.errors",
    "ServerConfig": "neuro_bitnet.server.config",
}


def __getattr__(name: str) -> Any:
    # Imported on first use, so `neuro --help` does not pay for httpx and starlette.
    if name in _LOCATIONS:
        import importlib

        return getattr(importlib.import_module(_LOCATIONS[name]), name)
    raise AttributeError(f"module 'neuro_bitnet.server' has no attribute {name!r}")
