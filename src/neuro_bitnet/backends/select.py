"""Choosing and opening a backend: auto (daemon if one answers, else native), native, subprocess, daemon."""

from __future__ import annotations

import socket
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

from neuro_bitnet.backends.base import Backend
from neuro_bitnet.config import Settings
from neuro_bitnet.engine.options import DEFAULT_CTX_SIZE
from neuro_bitnet.errors import NeuroError

BACKENDS = ("auto", "native", "subprocess", "daemon")

@dataclass(frozen=True)
class BackendRequest:
    """What the caller wants to run."""

    kind: str = "auto"
    model: str | None = None  # catalog id, alias or .gguf path; None: the default model
    model_given: bool = False  # the user named a model explicitly
    threads: int | None = None
    ctx_size: int = DEFAULT_CTX_SIZE
    assume_yes: bool = False
    confirm: Callable[[str], bool] | None = None  # asks before a download; None: nobody to ask


def open_backend(request: BackendRequest, settings: Settings,
                 loading: Callable[[str], AbstractContextManager] | None = None) -> Backend:
    """Open the backend ``request.kind`` names; auto picks a running daemon, else native.

    ``loading(model_id)`` wraps the loading of the model file (after any download), e.g. to
    show a spinner.
    """
    if request.kind not in BACKENDS:
        raise NeuroError(f"unknown backend {request.kind!r} (choose from {', '.join(BACKENDS)})")
    if request.kind in ("auto", "daemon"):
        from neuro_bitnet.config import env_url

        url = env_url()
        if request.kind == "daemon" or not nothing_listens(url):
            from neuro_bitnet.backends.daemon import DaemonBackend  # imports the HTTP client

            daemon = DaemonBackend.connect(url, model=request.model if request.model_given else None,
                                           required=request.kind == "daemon")
            if daemon is not None:
                return daemon

    from neuro_bitnet.models.catalog import DEFAULT_MODEL_ID
    from neuro_bitnet.models.manager import ModelManager

    manager = ModelManager(settings)
    model_id = request.model or settings.model or DEFAULT_MODEL_ID
    path = manager.ensure_model(model_id, assume_yes=request.assume_yes, confirm=request.confirm)
    with loading(model_id) if loading else nullcontext():
        if request.kind == "subprocess":
            from neuro_bitnet.backends.subprocess_cli import SubprocessBackend

            return SubprocessBackend(
                path, settings=settings, threads=request.threads, ctx_size=request.ctx_size, model_name=model_id
            )
        from neuro_bitnet.backends.native import NativeBackend

        return NativeBackend(path, threads=request.threads, ctx_size=request.ctx_size, model_name=model_id)


def nothing_listens(url: str, timeout: float = 1.0) -> bool:
    """True when no TCP server takes a connection at ``url``'s host and port: no daemon can answer
    there, so auto goes native without loading the HTTP client (a cold start saves ~0.1 s)."""
    parts = urlsplit(url)
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
        with socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=timeout):
            return False
    except (OSError, ValueError):  # refused, unreachable, unresolvable, timed out; bad port
        return True

