"""The storage interface the indexer, search, grounding and CLI use, and `open_store`, which picks
the store for a storage spec: a directory is the embedded SQLite store, a `postgresql://` (or
`postgres://`) URL the PostgreSQL + pgvector store. Nothing above this module knows which it has."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping, Protocol, Sequence, Union
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from neuro_bitnet.config import DATABASE_URL_SCHEMES
from neuro_bitnet.retrieval.errors import EmbedderMismatchError, StorageError

StorageSpec = Union[str, Path]  # a directory (SQLite) or a postgresql:// URL


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

    def meta(self) -> dict[str, str]:
        """How a store records it: its values under EMBEDDER_META_KEYS."""
        return {"embedder": self.name, "embedder_fingerprint": self.fingerprint, "embedder_dim": str(self.dim)}

    @classmethod
    def from_meta(cls, meta: Mapping[str, str | None]) -> EmbedderInfo | None:
        """The embedder a store recorded with ``meta()``; None if none (or only part of one) is."""
        name, fingerprint, dim = (meta.get(key) for key in EMBEDDER_META_KEYS)
        if not name or not fingerprint or not dim:
            return None
        return cls(name, fingerprint, int(dim))


EMBEDDER_META_KEYS = ("embedder", "embedder_fingerprint", "embedder_dim")


def embedder_stats(info: EmbedderInfo | None) -> dict[str, str | int | None]:
    """The embedder's entries of a store's ``stats()``."""
    return {
        "embedder": info.name if info else None,
        "embedder_dim": info.dim if info else None,
        "embedder_fingerprint": info.fingerprint if info else None,
    }


class Store(Protocol):
    """Documents, their chunks and vectors, searchable by vector and by words.

    Every write is one transaction (a killed writer leaves the store as it was before that
    write), chunk ids are never reused, and reads see other processes' committed writes.
    """

    @property
    def location(self) -> str:
        """Where the store is, for messages (a directory, or a URL without its password)."""
        ...

    def embedder(self) -> EmbedderInfo | None:
        """The embedder recorded in the index, None while the index is empty."""
        ...

    def set_embedder(self, info: EmbedderInfo) -> None:
        """Record the embedder; raises EmbedderMismatchError if another one is recorded."""
        ...

    def get_meta(self, key: str) -> str | None:
        """A free-form setting stored with the index (e.g. chunking parameters)."""
        ...

    def set_meta(self, key: str, value: str) -> None:
        """Store a free-form setting."""
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
        """(chunk id, cosine similarity) best first (exact on SQLite, HNSW on PostgreSQL)."""
        ...

    def lexical_search(self, query: str, k: int) -> list[tuple[int, float]]:
        """(chunk id, word-match score, higher is better) best first; accents do not matter."""
        ...

    def get_chunks(self, ids: Sequence[int]) -> dict[int, StoredChunk]:
        """Chunks by id (ids no longer stored are left out)."""
        ...

    def iter_chunk_texts(self) -> Iterator[str]:
        """Every chunk's text, in id order (used by tests and tools)."""
        ...

    def stats(self) -> dict:
        """Counts and sizes for `neuro stats`."""
        ...

    def check(self) -> list[str]:
        """Consistency problems (empty when sound)."""
        ...

    def writer_lock(self) -> AbstractContextManager[None]:
        """Held by `neuro index` for its whole run; StorageError at once if another run holds it."""
        ...

    def optimize(self) -> None:
        """Refresh the planner/term statistics after a batch of writes (end of an indexing run)."""
        ...

    def close(self) -> None:
        """Release the store."""
        ...

    def __enter__(self) -> "Store":
        ...

    def __exit__(self, *exc: object) -> None:
        ...


def check_embedder(current: EmbedderInfo | None, wanted: EmbedderInfo) -> None:
    """EmbedderMismatchError when an index built with `current` would get vectors of `wanted`."""
    if current is not None and (current.fingerprint != wanted.fingerprint or current.dim != wanted.dim):
        raise EmbedderMismatchError(
            f"this index was built with embedder {current.name} ({current.dim} dims); it cannot mix "
            f"in vectors from {wanted.name} ({wanted.dim} dims). Use --embedder {current.name}, "
            "or rebuild the index with --reindex"
        )


def document_vectors(chunks: Sequence[ChunkRecord], vectors: np.ndarray, embedder: EmbedderInfo | None,
                     location: str) -> np.ndarray:
    """The vectors of a document's chunks as every store writes them: one per chunk (ValueError
    otherwise), each of the dimension of the `embedder` recorded in the store at `location`
    (StorageError otherwise, and when none is recorded), contiguous float32.

    Stores call this before their write transaction, so a refused document changes nothing."""
    if len(chunks) != len(vectors):
        raise ValueError("one vector per chunk")
    if embedder is None:
        raise StorageError(f"index {location} records no embedder; set one before adding documents")
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    if len(vectors) and vectors.shape[1:] != (embedder.dim,):
        raise StorageError(
            f"index {location} takes vectors of {embedder.dim} dims (embedder {embedder.name}); "
            f"this document's vectors have shape {vectors.shape}"
        )
    return vectors


def is_database_url(spec: StorageSpec) -> bool:
    """Whether a storage spec names a PostgreSQL database rather than a directory."""
    return isinstance(spec, str) and spec.strip().lower().startswith(DATABASE_URL_SCHEMES)


def describe(spec: StorageSpec) -> str:
    """The spec for messages: a URL loses its password."""
    if not is_database_url(spec):
        return str(spec)
    parts = urlsplit(str(spec).strip())
    if not parts.password:
        return str(spec).strip()
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def open_store(spec: StorageSpec, *, create: bool = False) -> Store:
    """The store named by `spec`: SQLite in a directory, PostgreSQL for a postgresql:// URL.
    `create` makes an empty index where there is none (else StorageError says how to build one)."""
    if is_database_url(spec):
        from neuro_bitnet.retrieval.postgres_store import PostgresStore

        return PostgresStore(str(spec).strip(), create=create)
    from neuro_bitnet.retrieval.sqlite_store import SQLiteStore

    return SQLiteStore(spec, create=create)
