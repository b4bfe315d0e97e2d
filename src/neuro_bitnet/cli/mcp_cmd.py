"""`neuro mcp` (alias `neuro-mcp`): the model as Model Context Protocol tools over stdio."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from neuro_bitnet.cli.parallel_option import parallel_option
from neuro_bitnet.config import env_value
from neuro_bitnet.engine.options import DEFAULT_CTX_SIZE


@click.command("mcp")
@click.option("--model", "-m", "model_name", default=None, metavar="NAME|PATH",
              help="Catalog id/alias or .gguf path. [env NEURO_BITNET_MODEL; default 2b]")
@click.option("--threads", "-t", type=click.IntRange(1, 512), default=None, help="Compute threads.")
@click.option("--ctx-size", "-c", type=click.IntRange(16, 131072), default=DEFAULT_CTX_SIZE, show_default=True,
              help="Context size in tokens (prompt + answer) of each request.")
@parallel_option
@click.option("--storage", default=None, metavar="DIR|URL",
              help="Index directory or postgresql:// URL: adds the search_documents tool. [env NEURO_BITNET_STORAGE]")
@click.option("--embedder", default=None, help="Embedder for the index (default: the one it was built with).")
@click.option("--yes", "-y", "assume_yes", is_flag=True, help="Download the model on first use if missing.")
def command(model_name: str | None, threads: int | None, ctx_size: int, parallel: int | None,
            storage: str | Path | None,
            embedder: str | None, assume_yes: bool) -> None:
    """Serve MCP over stdio for editors (tools: ask, generate, translate, summarize, search_documents)."""
    from neuro_bitnet.server.mcp_server import MCPSettings, run_stdio

    if storage is None:
        storage = env_value("storage")
    if storage is not None:
        from neuro_bitnet.retrieval.paths import resolve_storage
        from neuro_bitnet.retrieval.store import open_store

        storage = resolve_storage(storage)
        open_store(storage).close()  # at once: StorageError saying how to build the index
    run_stdio(MCPSettings(model=model_name, threads=threads, ctx_size=ctx_size, parallel=parallel,
                          storage=storage,
                          embedder=embedder, assume_yes=assume_yes))


def main() -> None:
    """Console script `neuro-mcp`: the same as `neuro mcp`."""
    from neuro_bitnet.cli.main import main as neuro_main

    neuro_main(["mcp", *sys.argv[1:]])
