"""`neuro stats`: what a local index holds."""

from __future__ import annotations

import datetime

import click

from neuro_bitnet.cli.console import format_size, print_json
from neuro_bitnet.retrieval.paths import resolve_storage


@click.command("stats")
@click.option("--storage", default=None, metavar="DIR|URL",
              help="Index folder, or a postgresql:// URL [default: $NEURO_BITNET_STORAGE or the user data dir].")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def command(storage, as_json) -> None:
    """Documents, chunks, size and embedder of an index."""
    from neuro_bitnet.retrieval.store import open_store

    with open_store(resolve_storage(storage)) as store:
        stats = store.stats()
    if as_json:
        print_json(stats)
        return
    last = stats["last_indexed_at"]
    when = datetime.datetime.fromtimestamp(last).isoformat(sep=" ", timespec="seconds") if last else "never"
    embedder = f"{stats['embedder']} ({stats['embedder_dim']} dims)" if stats["embedder"] else "none yet"
    rows = [
        ["storage", stats["storage"]],
        ["documents", str(stats["documents"])],
        ["chunks", str(stats["chunks"])],
        ["size", format_size(stats["size_bytes"])],
        ["source text", format_size(stats["source_bytes"])],
        ["embedder", embedder],
        ["last indexed", when],
        ["schema", str(stats["schema_version"])],
    ]
    for name, value in rows:
        click.echo(f"{name + ':':<14}{value}")
