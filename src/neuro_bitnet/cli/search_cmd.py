"""`neuro search`: ranked passages from a local index (hybrid vector + keyword search)."""

from __future__ import annotations

import click

from neuro_bitnet.cli.console import print_json
from neuro_bitnet.retrieval.paths import resolve_storage

SNIPPET_CHARS = 240


def snippet(text: str, width: int = SNIPPET_CHARS) -> str:
    """The text on one line, cut at a word near `width`."""
    flat = " ".join(text.split())
    if len(flat) <= width:
        return flat
    cut = flat[:width]
    return (cut[: cut.rfind(" ")] if " " in cut[width // 2 :] else cut) + " …"


@click.command("search")
@click.argument("query")
@click.option("--storage", default=None, metavar="DIR|URL",
              help="Index folder, or a postgresql:// URL [default: $NEURO_BITNET_STORAGE or the user data dir].")
@click.option("-k", "--top-k", default=5, show_default=True, type=click.IntRange(1, 1000), help="How many results.")
@click.option("--mode", type=click.Choice(["hybrid", "vector", "lexical"]), default="hybrid", show_default=True,
              help="Vector, keyword (FTS5) or both fused by reciprocal rank.")
@click.option("--embedder", default=None, metavar="NAME|DIR",
              help="Embedder (default: the one the index was built with).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of {path, location, score, text, ...}.")
def command(query, storage, top_k, mode, embedder, as_json) -> None:
    """Search indexed documents for QUERY."""
    from neuro_bitnet.retrieval.search import search

    hits = search(resolve_storage(storage), query, top_k=top_k, embedder=embedder, mode=mode)
    if as_json:
        print_json([h.to_dict() for h in hits])
        return
    if not hits:
        click.echo("No results.")
        return
    for rank, hit in enumerate(hits, 1):
        where = f"{hit.path}" + (f" ({hit.location})" if hit.location else "")
        sim = f"  similarity {hit.similarity:.3f}" if hit.similarity is not None else ""
        click.echo(click.style(f"{rank}. {where}", bold=True) + f"  score {hit.score:.4f}{sim}")
        if hit.heading:
            click.echo(f"   {hit.heading}")
        click.echo(f"   {snippet(hit.text)}")
        click.echo()
