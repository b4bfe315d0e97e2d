"""Hybrid search (RRF) and grounded context on a real index built with the tiny embedder."""

from __future__ import annotations

from pathlib import Path

import pytest

from neuro_bitnet.retrieval.errors import EmbedderMismatchError, StorageError
from neuro_bitnet.retrieval.grounding import GroundedContext, combine_contexts, fit_sources, retrieve_context
from neuro_bitnet.retrieval.indexer import index_paths
from neuro_bitnet.retrieval.search import hybrid_search, open_index, rrf_fuse, search
from neuro_bitnet.retrieval.store import open_store

DOCS = {
    "pets.md": "# Pets\n\nThe dog barks loud at night.",
    "cats.txt": "The cat says meow to the moon.",
    "geo.md": "# Geography\n\nParis is the capital of France. The Eiffel tower is in Paris.",
    "river.txt": "The river water flows deep to the ocean.",
    "es.txt": "El perro ladra y el gato maúlla.",
}


@pytest.fixture
def index(tmp_path: Path, tiny_embedder, storage_spec):
    """The five documents indexed, once in each store (a directory or a postgresql:// URL)."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in DOCS.items():
        (docs / name).write_text(text)
    with open_store(storage_spec, create=True) as store:
        index_paths([docs], store, tiny_embedder)
    return storage_spec


def test_rrf_fuse() -> None:
    fused = rrf_fuse([[1, 2, 3], [3, 1]], k=60)
    assert [i for i, _ in fused] == [1, 3, 2]
    assert fused[0][1] == pytest.approx(1 / 61 + 1 / 62)


def test_spanish_query_finds_english_passage_through_vectors(index) -> None:
    hits = search(index, "¿Qué hace el perro de noche?", top_k=3, mode="vector")
    assert Path(hits[0].path).name in {"pets.md", "es.txt"}
    assert any(Path(h.path).name == "pets.md" for h in hits[:2])
    assert search(index, "perro", top_k=5, mode="lexical")[0].path.endswith("es.txt")
    assert not any(h.path.endswith("pets.md") for h in search(index, "perro", top_k=5, mode="lexical"))


def test_english_query_finds_spanish_passage(index) -> None:
    hits = search(index, "dog barks cat meow", top_k=5, mode="hybrid")
    assert any(h.path.endswith("es.txt") for h in hits[:3])


def test_hybrid_combines_both_lists(index, tiny_embedder) -> None:
    store, emb = open_index(index)
    try:
        hits = hybrid_search(store, emb, "Eiffel tower capital", top_k=5)
        assert hits[0].path.endswith("geo.md")
        assert hits[0].vector_rank == 1 and hits[0].lexical_rank == 1
        assert hits[0].score == pytest.approx(2 / 61)
        assert hits[0].location == "lines 1-3" and hits[0].heading == "Geography"
        assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
    finally:
        store.close()


def test_open_index_uses_recorded_embedder_and_refuses_another(index, other_embedder_dir) -> None:
    store, emb = open_index(index)
    store.close()
    assert emb is not None and emb.dim == 16
    with pytest.raises(EmbedderMismatchError, match="--reindex"):
        search(index, "dog", embedder=str(other_embedder_dir))


def test_search_without_index(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no index"):
        search(tmp_path / "none", "dog")


def test_retrieve_context_numbers_and_fits_budget(index) -> None:
    ctx = retrieve_context("Where is the Eiffel tower?", index, budget_tokens=4000)
    assert ctx.sources[0]["path"].endswith("geo.md") and ctx.sources[0]["n"] == 1
    assert [s["n"] for s in ctx.sources] == list(range(1, len(ctx.sources) + 1))
    assert ctx.prompt_block.startswith(f"[1] {ctx.sources[0]['path']} (lines 1-3)\n")
    assert "[1]" in ctx.instructions and "[2]" in ctx.instructions
    small = retrieve_context("Where is the Eiffel tower?", index, budget_tokens=30,
                             count_tokens=lambda t: len(t.split()))
    assert len(small.sources) == 1
    assert len(small.prompt_block.split()) <= 30


def test_fit_sources_truncates_and_stops() -> None:
    def count(text: str) -> int:
        return len(text.split())

    items = [{"kind": "file", "path": f"/p{i}", "location": "", "score": 1.0, "text": "word " * 100} for i in range(3)]
    kept = fit_sources(items, 160, count)
    assert [s["n"] for s in kept] == [1, 2]
    assert kept[0]["text"] == items[0]["text"] and kept[1].get("truncated")
    assert sum(count(f"[{s['n']}] {s['path']}\n{s['text']}") for s in kept) <= 160
    assert fit_sources(items, 4, count) == []


def test_combine_contexts_renumbers_and_joins_notes() -> None:
    local = GroundedContext([{"n": 1, "kind": "file", "path": "/a", "location": "page 2", "score": 1, "text": "A"}])
    web = GroundedContext([{"n": 1, "kind": "web", "path": "https://x", "url": "https://x", "title": "X",
                            "location": "", "score": None, "text": "B"}], note="n1")
    both = combine_contexts(local, web, GroundedContext(note="n2"))
    assert [s["n"] for s in both.sources] == [1, 2]
    assert both.format_sources() == "[1] /a (page 2)\n[2] X <https://x>"
    assert both.note == "n1; n2" and both.to_dict()["sources"][1]["url"] == "https://x"


def test_a_store_rebuilt_with_another_embedder_is_refused_not_crashed(
    tmp_path, tiny_embedder, other_embedder_dir, storage_spec
) -> None:
    """A long-lived process (daemon) keeps its embedder; a --reindex with another one by another
    process makes its next vector search a clear error instead of mixing vector spaces."""
    from neuro_bitnet.retrieval.embedders import OnnxEmbedder
    from neuro_bitnet.retrieval.errors import EmbedderMismatchError
    from neuro_bitnet.retrieval.indexer import IndexOptions, index_paths
    from neuro_bitnet.retrieval.search import hybrid_search

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("The dog barks.")
    with open_store(storage_spec, create=True) as writer:
        index_paths([tmp_path / "docs"], writer, tiny_embedder)
    with open_store(storage_spec) as daemon:
        assert hybrid_search(daemon, tiny_embedder, "dog")
        with open_store(storage_spec) as writer:
            index_paths([tmp_path / "docs"], writer, OnnxEmbedder(other_embedder_dir), IndexOptions(reindex=True))
        with pytest.raises(EmbedderMismatchError, match="rebuilt with embedder"):
            hybrid_search(daemon, tiny_embedder, "dog")
        assert hybrid_search(daemon, tiny_embedder, "dog", mode="lexical")
