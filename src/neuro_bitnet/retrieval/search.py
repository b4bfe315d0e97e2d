"""Hybrid search over any `Store`: vector search and lexical search, fused by reciprocal rank fusion."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from neuro_bitnet.retrieval.embedders.base import Embedder
from neuro_bitnet.retrieval.errors import EmbedderMismatchError, StorageError
from neuro_bitnet.retrieval.store import StorageSpec, Store, open_store

RRF_K = 60


@dataclass
class SearchHit:
    """One ranked chunk."""

    chunk_id: int
    path: str
    location: str
    heading: str
    text: str
    score: float  # fused RRF score (higher is better)
    similarity: float | None  # cosine similarity to the query, when the vector search found it
    vector_rank: int | None
    lexical_rank: int | None

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)


def rrf_fuse(rankings: list[list[int]], k: int = RRF_K) -> list[tuple[int, float]]:
    """Reciprocal rank fusion of ranked id lists: score = sum of 1 / (k + rank), rank from 1."""
    scores: dict[int, float] = {}
    for ranking in rankings:
        for rank, item in enumerate(ranking, 1):
            scores[item] = scores.get(item, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))


def hybrid_search(store: Store, embedder: Embedder | None, query: str, top_k: int = 5,
                  candidates: int = 50, mode: str = "hybrid") -> list[SearchHit]:
    """Top `top_k` chunks for `query`. `mode` is hybrid, vector or lexical."""
    if mode not in ("hybrid", "vector", "lexical"):
        raise ValueError(f"unknown search mode {mode!r}")
    query = query.strip()
    if not query or top_k <= 0:
        return []
    pool = max(candidates, top_k)
    if mode != "lexical" and embedder:
        _check_embedder(store, embedder)
    vector = store.vector_search(embedder.embed_query(query), pool) if mode != "lexical" and embedder else []
    lexical = store.lexical_search(query, pool) if mode != "vector" else []
    similarity = dict(vector)
    vector_rank = {cid: r for r, (cid, _) in enumerate(vector, 1)}
    lexical_rank = {cid: r for r, (cid, _) in enumerate(lexical, 1)}
    fused = rrf_fuse([[c for c, _ in vector], [c for c, _ in lexical]])[:top_k]
    chunks = store.get_chunks([cid for cid, _ in fused])
    hits = []
    for cid, score in fused:
        chunk = chunks.get(cid)
        if chunk is None:
            continue
        hits.append(SearchHit(cid, chunk.path, chunk.location, chunk.heading, chunk.text, score,
                              similarity.get(cid), vector_rank.get(cid), lexical_rank.get(cid)))
    return hits


def _check_embedder(store: Store, embedder: Embedder) -> None:
    """The index may have been rebuilt (`--reindex`) with another embedder since it was opened."""
    info = store.embedder()
    if info is not None and (info.fingerprint != embedder.fingerprint or info.dim != embedder.dim):
        raise EmbedderMismatchError(
            f"the index was rebuilt with embedder {info.name} after this process loaded {embedder.name}; "
            "restart it (or search with --embedder " + info.name + ")"
        )


def open_index(storage: StorageSpec, embedder: str | None = None) -> tuple[Store, Embedder | None]:
    """Open an existing index (a directory or a postgresql:// URL) and the embedder it was built
    with (or the one named, if compatible)."""
    from neuro_bitnet.retrieval.embedders.registry import load_embedder

    store = open_store(storage)
    try:
        info = store.embedder()
        if info is None:
            return store, None  # empty index: nothing to embed against
        loaded = load_embedder(embedder or info.name)
        if loaded.fingerprint != info.fingerprint or loaded.dim != info.dim:
            raise EmbedderMismatchError(
                f"this index was built with embedder {info.name}, not {loaded.name}; "
                f"search it with --embedder {info.name} or rebuild it with --reindex"
            )
        return store, loaded
    except BaseException:
        store.close()
        raise


def search(storage: StorageSpec, query: str, top_k: int = 5, embedder: str | None = None,
           mode: str = "hybrid") -> list[SearchHit]:
    """Open the index at `storage` and search it."""
    store, emb = open_index(storage, embedder)
    try:
        if emb is None and mode != "lexical":
            if store.stats()["chunks"]:
                raise StorageError(f"index {store.location} records no embedder; rebuild it with --reindex")
            return []
        return hybrid_search(store, emb, query, top_k=top_k, mode=mode)
    finally:
        store.close()
