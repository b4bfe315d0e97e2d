"""Local retrieval: load documents, chunk, embed, store in SQLite, and search them (hybrid, RRF)."""

from neuro_bitnet.retrieval.errors import EmbedderError, EmbedderMismatchError, StorageError

__all__ = ["EmbedderError", "EmbedderMismatchError", "StorageError"]
