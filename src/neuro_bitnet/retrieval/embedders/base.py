"""The interface every embedder implements."""

from __future__ import annotations

from typing import Protocol, Sequence

import numpy as np


class Embedder(Protocol):
    """Maps text to unit-length float32 vectors of a fixed dimension."""

    name: str  # how to load it again: a catalog name or a directory
    fingerprint: str  # identifies the exact weights; an index refuses vectors from another
    dim: int
    max_tokens: int

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        """Vectors (n, dim) float32 for passages to be stored."""
        ...

    def embed_query(self, text: str) -> np.ndarray:
        """Vector (dim,) float32 for a search query."""
        ...

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        """Character offsets of the embedder's tokens in `text` (for chunking)."""
        ...
