"""A small real document index for the search tests, built with the retrieval package."""

from __future__ import annotations

from pathlib import Path

DOCS = {
    "pets.md": "# Pets\n\nThe dog barks loudly at night. A puppy needs water.\n",
    "space.md": "# Space\n\nThe moon shines over the ocean and the sea at night.\n",
    "bread.md": "# Food\n\nThe bakery sells fresh bread every morning.\n",
}


def build_index(tmp: Path, storage: str | Path | None = None) -> tuple[str | Path, Path]:
    """(storage, embedder dir): a tiny ONNX embedder and an index of three documents, in
    `storage` (a directory or a postgresql:// URL; default: a directory in `tmp`)."""
    from neuro_bitnet.retrieval.embedders import OnnxEmbedder
    from neuro_bitnet.retrieval.indexer import index_paths
    from neuro_bitnet.retrieval.store import open_store

    from support.tiny_embedder import build_tiny_embedder

    embedder_dir = build_tiny_embedder(tmp / "embedder")
    docs = tmp / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text, encoding="utf-8")
    storage = tmp / "index" if storage is None else storage
    with open_store(storage, create=True) as store:
        index_paths([docs], store, OnnxEmbedder(embedder_dir))
    return storage, embedder_dir
