"""Run the server in this process: load the model, bind the socket, serve until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import errno
import logging
import signal
import socket
from pathlib import Path
from typing import Any

from neuro_bitnet.config import base_url
from neuro_bitnet.errors import DaemonError
from neuro_bitnet.server.config import ServerConfig, is_loopback
from neuro_bitnet.server.model_loader import ModelInfo

log = logging.getLogger("neuro_bitnet.server")


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket; a clear DaemonError if the address is taken or invalid."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise DaemonError(f"cannot resolve host {host!r}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        reason = "is already in use" if exc.errno == errno.EADDRINUSE else f"cannot be bound ({exc.strerror})"
        raise DaemonError(f"{host}:{port} {reason}; choose another --port") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def insecure_bind_warning(config: ServerConfig) -> str | None:
    """The warning to print when the server is reachable from other machines without a key."""
    if is_loopback(config.host) or config.api_key:
        return None
    return (f"listening on {config.host} without --api-key: anyone who can reach this machine can use "
            "the model; set --api-key (or NEURO_DAEMON_API_KEY) or bind to 127.0.0.1")


def serve(model: Any, info: ModelInfo, config: ServerConfig, *, retrieval: Any = None,
          access_log: bool = True, announce: Any = print) -> None:
    """Serve until stopped. ``announce`` receives the ready line with the real URL."""
    import functools

    import uvicorn

    from neuro_bitnet.server.app import create_app
    from neuro_bitnet.server.connections import KEEP_ALIVE_TIMEOUT, ConnectionGuard, GuardedH11Protocol
    from neuro_bitnet.server.daemon import remove_pid_file, write_pid_file

    sock = bind_socket(config.host, config.port)
    port = sock.getsockname()[1]
    url = base_url(config.host, port)
    app = create_app(model, info, config, retrieval)
    guard = ConnectionGuard(config.max_connections, config.read_timeout)
    uv_config = uvicorn.Config(
        app,
        http=functools.partial(GuardedH11Protocol, guard=guard),  # type: ignore[arg-type]
        ws="none",
        log_level="info",
        access_log=access_log,
        timeout_graceful_shutdown=config.shutdown_grace,
        # No limit_concurrency: it counts idle connections too and answers plain-text 503s. The
        # guard bounds connections (so requests in flight), the worker's queue bounds model work.
        timeout_keep_alive=KEEP_ALIVE_TIMEOUT,
        server_header=False,
    )
    server = uvicorn.Server(uv_config)

    async def main() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.02)
        if server.started:
            if config.pid_file is not None:
                write_pid_file(config.pid_file, url, info.id)
            announce(f"neuro daemon: serving {info.id} on {url} (OpenAI API at {url}/v1, chat page at {url}/)")
        await task

    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal to the handler that was
    # installed before it: make that one a no-op so a graceful stop exits with status 0.
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        asyncio.run(main())
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()
        if config.pid_file is not None:
            remove_pid_file(config.pid_file)
    if not server.started:
        raise DaemonError("the server failed to start; see the messages above")
    announce(f"neuro daemon: stopped ({url})")


def load_retrieval(storage: Path | str | None, embedder: str | None, max_pending: int) -> Any:
    """The retrieval service when ``--storage`` or ``--embedder`` asks for one."""
    if storage is None and embedder is None:
        return None
    from neuro_bitnet.server.retrieval_service import RetrievalService

    return RetrievalService(storage=storage, embedder=embedder, max_pending=max_pending)
