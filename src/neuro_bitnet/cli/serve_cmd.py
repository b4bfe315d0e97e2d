"""`neuro serve` (alias `neuro-daemon`): the OpenAI-compatible HTTP server that keeps a model loaded."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from neuro_bitnet.cli.parallel_option import parallel_option
from neuro_bitnet.config import ENV_VARS, check_api_key, env_api_key, env_host, env_port
from neuro_bitnet.engine.options import DEFAULT_CTX_SIZE
from neuro_bitnet.server.config import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_QUEUE,
    DEFAULT_MAX_TOKENS,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_SHUTDOWN_GRACE,
    ServerConfig,
)


@click.command("serve")
@click.option("--host", default=None, help="Address to listen on. [env NEURO_DAEMON_HOST; default 127.0.0.1]")
@click.option("--port", type=click.IntRange(0, 65535), default=None,
              help="Port (0 picks a free one). [env NEURO_DAEMON_PORT; default 11435]")
@click.option("--model", "-m", "model_name", default=None, metavar="NAME|PATH",
              help="Catalog id/alias or .gguf path. [env NEURO_BITNET_MODEL; default 2b]")
@click.option("--threads", "-t", type=click.IntRange(1, 512), default=None,
              help="Compute threads (default: physical cores).")
@click.option("--ctx-size", "-c", type=click.IntRange(16, 131072), default=DEFAULT_CTX_SIZE, show_default=True,
              help="Context size in tokens (prompt + answer) of each request: every --parallel slot has its own.")
@parallel_option
@click.option("--api-key", default=None,
              help="Require 'Authorization: Bearer KEY' on every request. Prefer the environment variable: "
                   "the flag shows in the process list. [env NEURO_DAEMON_API_KEY]")
@click.option("--auto-translate/--no-auto-translate", default=False, show_default=True,
              help="Answer non-English questions by translating through English (per request: \"translate\").")
@click.option("--storage", default=None, metavar="DIR|URL",
              help="Index directory or postgresql:// URL (from `neuro index`): enables POST /v1/search and "
                   "/v1/embeddings.")
@click.option("--embedder", default=None, help="Embedder for POST /v1/embeddings (default: the index's).")
@click.option("--max-tokens", "default_max_tokens", type=click.IntRange(1), default=DEFAULT_MAX_TOKENS,
              show_default=True, help="Answer length when a request does not set max_tokens.")
@click.option("--max-queue", type=click.IntRange(1), default=DEFAULT_MAX_QUEUE, show_default=True,
              help="Requests that may wait for the model before new ones get 503.")
@click.option("--max-body", "max_body_bytes", type=click.IntRange(1024), default=DEFAULT_MAX_BODY_BYTES,
              show_default=True, help="Largest request body in bytes.")
@click.option("--max-connections", type=click.IntRange(1), default=DEFAULT_MAX_CONNECTIONS, show_default=True,
              help="Open connections; at the limit the oldest idle one is closed.")
@click.option("--read-timeout", type=click.FloatRange(0, min_open=True), default=DEFAULT_READ_TIMEOUT,
              show_default=True, help="Seconds a client has to send a request's head, and again its body.")
@click.option("--allowed-host", "allowed_hosts", multiple=True, metavar="NAME",
              help="Also answer requests for this Host name (repeatable; '*' for any). Default, against DNS "
                   "rebinding: localhost and loopback addresses (any IP address when bound beyond loopback).")
@click.option("--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN",
              help="Let web pages from ORIGIN (e.g. http://localhost:3000) call the API (repeatable). Default: none.")
@click.option("--shutdown-grace", type=click.FloatRange(0), default=DEFAULT_SHUTDOWN_GRACE, show_default=True,
              help="Seconds SIGTERM waits for answers in progress.")
@click.option("--detach", is_flag=True, help="Run in the background (see `neuro daemon status|stop`).")
@click.option("--pid-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Pid file (default with --detach: the user state dir's daemon.pid).")
@click.option("--log-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="With --detach: where the daemon's output goes (default: next to the pid file).")
@click.option("--yes", "-y", "assume_yes", is_flag=True, help="Download the model without asking if missing.")
@click.option("--quiet", "-q", is_flag=True, help="No per-request access log.")
def command(host: str | None, port: int | None, model_name: str | None, threads: int | None, ctx_size: int,
            parallel: int | None, api_key: str | None, auto_translate: bool, storage: str | None, embedder: str | None,
            default_max_tokens: int, max_queue: int, max_body_bytes: int, max_connections: int,
            read_timeout: float, allowed_hosts: tuple[str, ...], cors_origins: tuple[str, ...],
            shutdown_grace: float, detach: bool,
            pid_file: Path | None, log_file: Path | None, assume_yes: bool, quiet: bool) -> None:
    """Serve a model over an OpenAI-compatible HTTP API (keeps it loaded between requests)."""
    from neuro_bitnet.cli import console
    from neuro_bitnet.errors import DaemonError
    from neuro_bitnet.server import daemon
    from neuro_bitnet.server.model_loader import load, resolve_model
    from neuro_bitnet.server.runner import insecure_bind_warning, load_retrieval, serve

    if api_key is None:
        api_key = env_api_key()  # checked as it is read
    else:
        check_api_key(api_key)
        console.warn("--api-key shows in the process list (ps) to every user of this machine; "
                     "prefer the NEURO_DAEMON_API_KEY environment variable")
    config = ServerConfig(
        host=host or env_host(),
        port=env_port() if port is None else port,
        api_key=api_key,
        auto_translate=auto_translate,
        storage=storage,
        default_max_tokens=default_max_tokens,
        max_body_bytes=max_body_bytes,
        max_queue=max_queue,
        shutdown_grace=shutdown_grace,
        pid_file=pid_file,
        max_connections=max_connections,
        read_timeout=read_timeout,
        allowed_hosts=list(allowed_hosts),
        cors_origins=list(cors_origins),
    )
    if storage is not None:
        from neuro_bitnet.retrieval.paths import resolve_storage
        from neuro_bitnet.retrieval.store import open_store

        config.storage = storage = resolve_storage(storage)
        open_store(storage).close()  # at once: StorageError saying how to build the index
    _check_port_free(config.host, config.port)  # at once, not after loading the model
    warning = insecure_bind_warning(config)
    if warning:
        console.warn(warning)

    if detach:
        config.pid_file = pid_file or daemon.default_pid_file()
        # Download (and ask) here, not in the background.
        resolve_model(model_name, assume_yes=assume_yes, confirm=console.download_question())
        args = _child_args(config, model_name, threads, ctx_size, parallel, embedder, quiet)
        env = dict(os.environ)
        if config.api_key:
            env[ENV_VARS["daemon_api_key"]] = config.api_key  # kept out of the process list
        log_path = log_file or daemon.default_log_file(config.pid_file)
        console.status(f"starting the daemon (log: {log_path})")
        record = daemon.start_detached([sys.executable, "-m", "neuro_bitnet.cli.serve_cmd", *args],
                                       config.pid_file, log_path, env)
        click.echo(f"neuro daemon running: pid {record.pid}, {record.url} (model {record.model})")
        click.echo(f"chat page: {record.url}/")
        click.echo(f"stop it with: neuro daemon stop --pid-file {config.pid_file}")
        return

    if config.pid_file is not None:
        existing = daemon.running_record(config.pid_file)
        if existing is not None:
            raise DaemonError(f"a daemon is already running with pid file {config.pid_file} (pid {existing.pid})")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(message)s")
    path, info = resolve_model(model_name, assume_yes=assume_yes, confirm=console.download_question())
    console.status(f"loading {info.id} from {path}")
    model = load(path, info, threads=threads, ctx_size=ctx_size, parallel=parallel)
    console.status(f"answering up to {model.parallel} requests at once (--parallel), "
                   f"{model.ctx_size} tokens of context each")
    retrieval = load_retrieval(storage, embedder, max_queue)
    serve(model, info, config, retrieval=retrieval, access_log=not quiet,
          announce=lambda line: click.echo(line, err=False) or sys.stdout.flush())


def _check_port_free(host: str, port: int) -> None:
    """DaemonError when ``host:port`` cannot be bound (in use, or not an address of this machine)."""
    import socket

    from neuro_bitnet.errors import DaemonError

    if port == 0:
        return
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server itself binds
            probe.bind(address)
    except OSError as exc:
        raise DaemonError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def _child_args(config: ServerConfig, model_name: str | None, threads: int | None, ctx_size: int,
                parallel: int | None, embedder: str | None, quiet: bool) -> list[str]:
    """The foreground command line equivalent to this one, for the background process."""
    args = ["--host", config.host, "--port", str(config.port), "--ctx-size", str(ctx_size),
            "--max-tokens", str(config.default_max_tokens), "--max-queue", str(config.max_queue),
            "--max-body", str(config.max_body_bytes), "--shutdown-grace", str(config.shutdown_grace),
            "--pid-file", str(config.pid_file), "--max-connections", str(config.max_connections),
            "--read-timeout", str(config.read_timeout),
            "--auto-translate" if config.auto_translate else "--no-auto-translate"]
    for name in config.allowed_hosts:
        args += ["--allowed-host", name]
    for origin in config.cors_origins:
        args += ["--cors-origin", origin]
    if model_name:
        args += ["--model", model_name]
    if threads:
        args += ["--threads", str(threads)]
    if parallel:
        args += ["--parallel", str(parallel)]
    if config.storage is not None:
        args += ["--storage", str(config.storage)]
    if embedder:
        args += ["--embedder", embedder]
    if quiet:
        args.append("--quiet")
    return args


def daemon_main() -> None:
    """Console script `neuro-daemon` and `python -m neuro_bitnet.cli.serve_cmd` (what
    `neuro serve --detach` starts): the same as `neuro serve`."""
    from neuro_bitnet.cli.main import main

    main(["serve", *sys.argv[1:]])


if __name__ == "__main__":
    daemon_main()
