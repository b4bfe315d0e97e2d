"""Finding and loading the one model the server runs, and the names clients may call it by."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from neuro_bitnet.engine.options import DEFAULT_CTX_SIZE


@dataclass
class ModelInfo:
    """The served model's public id, the other names accepted for it, and its context size."""

    id: str
    aliases: list[str] = field(default_factory=list)
    path: Path | None = None
    ctx_size: int = DEFAULT_CTX_SIZE
    n_vocab: int | None = None
    max_token_bytes: int = 256  # the longest token's text in bytes (bounds a prompt's size)

    def accepts(self, name: str | None) -> bool:
        """True for no name, ``default``, the id or an alias (case-insensitive)."""
        if name is None or not name.strip():
            return True
        wanted = name.strip().lower()
        return wanted == "default" or wanted in {n.lower() for n in [self.id, *self.aliases]}


def default_model_name() -> str:
    """``NEURO_BITNET_MODEL`` or the catalog default."""
    from neuro_bitnet.config import setting
    from neuro_bitnet.models.catalog import DEFAULT_MODEL_ID

    return setting("model") or DEFAULT_MODEL_ID


def resolve_model(name_or_path: str | None, *, assume_yes: bool = False,
                  confirm: Callable[[str], bool] | None = None) -> tuple[Path, ModelInfo]:
    """The local file of a catalog id/alias or a path (downloading if allowed, see
    :meth:`ModelManager.ensure_model`) and its names."""
    from neuro_bitnet.models.manager import ModelManager

    name = name_or_path or default_model_name()
    manager = ModelManager()
    resolved = manager.resolve(name)
    path = manager.ensure_model(name, assume_yes=assume_yes, confirm=confirm)
    if isinstance(resolved, Path):
        info = ModelInfo(id=_file_model_id(path), aliases=[path.stem, path.name], path=path)
    else:
        info = ModelInfo(id=resolved.id, aliases=[*resolved.aliases, resolved.name, path.name], path=path)
    return path, info


def _file_model_id(path: Path) -> str:
    """A readable id for a local file: its stem, or its folder's name for generic stems."""
    generic = path.stem.lower() in {"model", "ggml-model-i2_s", "ggml-model", "model-i2_s"}
    return path.parent.name if generic and path.parent.name else path.stem


def load(path: Path, info: ModelInfo, *, threads: int | None, ctx_size: int, parallel: int | None = None) -> Any:
    """Load the engine model and complete ``info`` with what the file says. ``parallel``: the
    requests answered at once, each with ``ctx_size`` positions (None: the machine's default,
    ``engine.parallel.default_parallel``)."""
    from neuro_bitnet.engine import load_model

    model = load_model(path, threads=threads, ctx_size=ctx_size, parallel=parallel)
    info.ctx_size = model.ctx_size
    info.n_vocab = model.n_vocab
    info.max_token_bytes = max_token_bytes(model)
    name = getattr(model, "name", None)
    info.aliases = [a for a in dict.fromkeys([*info.aliases, name or ""]) if a and a != info.id]
    return model


def max_token_bytes(model: Any) -> int:
    """Bytes of the model's longest token: a prompt of n tokens has at most n times as many."""
    tok = model.tokenizer
    return max(1, max((len(tok.token_bytes(i)) for i in range(model.n_vocab)), default=1))
