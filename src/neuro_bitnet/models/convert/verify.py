"""Check that a converted file loads in the engine and computes a token."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neuro_bitnet.errors import EngineError
from neuro_bitnet.models.convert.errors import ConvertError


def check_loads(path: Path, threads: int | None = None) -> None:
    """Load ``path`` with the engine and run one token (BOS, or id 0); ConvertError if that fails
    or the logits are not finite."""
    from neuro_bitnet.engine import load_model

    try:
        with load_model(path, threads=threads, ctx_size=16) as model:
            bos = model.tokenizer.bos_id
            logits = model.logits([bos if bos is not None else 0])
    except EngineError as exc:
        raise ConvertError(f"the converted file does not load in the engine: {exc}") from None
    if not np.all(np.isfinite(logits)):
        raise ConvertError(f"the converted file {path.name} produces non-finite logits")
