"""Errors of the retrieval layer, each with a one-line message for the user."""

from __future__ import annotations

from neuro_bitnet.errors import NeuroError


class StorageError(NeuroError):
    """The index storage is missing, corrupt, locked, or from a newer version."""

    exit_code = 6


class EmbedderMismatchError(StorageError):
    """The index was built with another embedder than the one requested."""


class EmbedderError(NeuroError):
    """An embedder cannot be found, downloaded or run."""

    exit_code = 7
