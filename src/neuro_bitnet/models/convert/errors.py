"""The converter's error type."""

from __future__ import annotations

from neuro_bitnet.errors import NeuroError


class ConvertError(NeuroError):
    """A checkpoint cannot be converted (missing file, unsupported layout, bad tensor)."""

    exit_code = 6
