"""Embeddings and index search for the server, on one dedicated thread.

A store's connection (SQLite or PostgreSQL) belongs to the thread that opened it, and the
embedder is heavy; both live on a single-thread executor so requests never share them concurrently. Like the model's,
its queue is bounded: past ``max_pending`` waiting requests, new ones get RetrievalBusyError.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np

DEFAULT_MAX_PENDING = 128


class RetrievalBusyError(Exception):
    """Too many embedding or search requests are already waiting."""


class RetrievalService:
    """The embedder (``embedder`` name, or the one the index was built with) and the index."""

    def __init__(self, storage: Path | str | None = None, embedder: str | None = None,
                 max_pending: int = DEFAULT_MAX_PENDING) -> None:
        self.storage = storage
        self.max_pending = max_pending
        self.pending = 0  # requests submitted and not finished (counted on the event loop)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="neuro-retrieval")
        self._store: Any = None
        self._embedder: Any = None
        # Open on the executor's thread: the SQLite connection must be used there only.
        self._executor.submit(self._open, storage, embedder).result()

    def _open(self, storage: Path | str | None, embedder: str | None) -> None:
        if storage is not None:
            from neuro_bitnet.retrieval.search import open_index

            self._store, self._embedder = open_index(storage, embedder)
        if self._embedder is None and embedder is not None:
            from neuro_bitnet.retrieval.embedders.registry import load_embedder

            self._embedder = load_embedder(embedder)

    @property
    def embedder_name(self) -> str | None:
        return getattr(self._embedder, "name", None)

    @property
    def can_embed(self) -> bool:
        return self._embedder is not None

    @property
    def can_search(self) -> bool:
        return self._store is not None

    async def embed(self, texts: Sequence[str], *, query: bool = False) -> tuple[np.ndarray, int]:
        """Unit vectors (n, dim) and the number of input tokens."""
        return await self._run(self._embed, list(texts), query)

    def _embed(self, texts: list[str], query: bool) -> tuple[np.ndarray, int]:
        if query:
            vectors = np.stack([self._embedder.embed_query(t) for t in texts])
        else:
            vectors = self._embedder.embed_documents(texts)
        tokens = sum(len(self._embedder.token_spans(t)) for t in texts)
        return np.asarray(vectors, dtype=np.float32), tokens

    async def search(self, query: str, top_k: int) -> list[dict[str, Any]]:
        """The best chunks for ``query`` (hybrid vector + lexical search)."""
        return await self._run(self._search, query, top_k)

    def _search(self, query: str, top_k: int) -> list[dict[str, Any]]:
        from neuro_bitnet.retrieval.search import hybrid_search

        return [hit.to_dict() for hit in hybrid_search(self._store, self._embedder, query, top_k=top_k)]

    def search_sync(self, query: str, top_k: int) -> list[dict[str, Any]]:
        """Blocking search, for callers outside an event loop."""
        return self._executor.submit(self._search, query, top_k).result()

    async def _run(self, fn: Any, *args: Any) -> Any:
        if self.pending >= self.max_pending:
            raise RetrievalBusyError(f"{self.pending} retrieval requests are already waiting")
        self.pending += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        finally:
            self.pending -= 1

    def close(self) -> None:
        def _close() -> None:
            if self._store is not None:
                self._store.close()

        self._executor.submit(_close).result()
        self._executor.shutdown(wait=True)
