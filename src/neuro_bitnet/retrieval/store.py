"""The storage interface the indexer and search use, so another store can plug in later."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np


@dataclass
class DocumentInfo:
    """What the store remembers about an indexed file."""

    path: str
    sha256: str
    size: int
    mtime_ns: int
    chunks: int


@dataclass
class ChunkRecord:
    """A chunk to store."""

    ordinal: int
    text: str
    heading: str
    location: str


@dataclass
class StoredChunk:
    """A chunk read back from the store."""

    id: int
    path: str
    ordinal: int
    text: str
    heading: str
    location: str


@dataclass
class EmbedderInfo:
    """The embedder an index was built with."""

    name: str
    fingerprint: str
    dim: int


class Store(Protocol):
    """Documents, their chunks and vectors, searchable by vector and by words."""

    def embedder(self) -> EmbedderInfo | None:
        """The embedder recorded in the index, None while the index is empty."""
        ...

    def set_embedder(self, info: EmbedderInfo) -> None:
        """Record the embedder; raises EmbedderMismatchError if another one is recorded."""
        ...

    def documents(self) -> dict[str, DocumentInfo]:
        """Every indexed document by path."""
        ...

    def replace_document(self, doc: DocumentInfo, chunks: Sequence[ChunkRecord], vectors: np.ndarray) -> None:
        """Atomically replace a document's chunks and vectors (all or nothing)."""
        ...

    def touch_document(self, path: str, size: int, mtime_ns: int) -> None:
        """Update size/mtime of an unchanged document."""
        ...

    def delete_documents(self, paths: Sequence[str]) -> None:
        """Forget documents and their chunks."""
        ...

    def clear(self) -> None:
        """Drop everything, including the recorded embedder."""
        ...

    def vector_search(self, query: np.ndarray, k: int) -> list[tuple[int, float]]:
        """(chunk id, cosine similarity) best first, exact."""
        ...

    def lexical_search(self, query: str, k: int) -> list[tuple[int, float]]:
        """(chunk id, bm25 score, higher is better) best first."""
        ...

    def get_chunks(self, ids: Sequence[int]) -> dict[int, StoredChunk]:
        """Chunks by id."""
        ...

    def stats(self) -> dict:
        """Counts and sizes for `neuro stats`."""
        ...

    def close(self) -> None:
        """Release the store."""
        ...
