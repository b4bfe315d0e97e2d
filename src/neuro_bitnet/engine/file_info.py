"""What a GGUF file is, from its header alone: architecture, name, context, quantization, chat format."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from neuro_bitnet.engine.architecture import ARCHITECTURES, canonical_arch
from neuro_bitnet.engine.chat_format import ChatFormatError, chat_format
from neuro_bitnet.engine.gguf import GGUFFile
from neuro_bitnet.errors import EngineError


def gguf_summary(path: str | Path) -> dict[str, Any]:
    """Facts about the GGUF at ``path`` (no weights are read). EngineError if it is not one."""
    path = Path(path)
    with GGUFFile(path) as f:
        meta = f.metadata
        types = Counter(info.ggml_type.name for info in f.tensors.values())
        n_tensors = len(f.tensors)
    file_arch = meta.get("general.architecture")
    arch = canonical_arch(file_arch) if isinstance(file_arch, str) else None

    def arch_key(key: str) -> Any:
        return meta.get(f"{file_arch}.{key}", meta.get(f"{arch}.{key}"))

    template = meta.get("tokenizer.chat_template")
    try:
        fmt = chat_format(template)
        chat = {"format": fmt.name, "description": fmt.description}
    except ChatFormatError as exc:
        raise EngineError(f"{path.name}: {exc}") from None
    name = meta.get("general.name")
    tokens = meta.get("tokenizer.ggml.tokens")
    return {
        "path": str(path),
        "size": path.stat().st_size,
        "architecture": arch,
        "file_architecture": file_arch,
        "supported": arch in ARCHITECTURES,
        "name": name if isinstance(name, str) else None,
        "context_length": arch_key("context_length"),
        "layers": arch_key("block_count"),
        "embedding_length": arch_key("embedding_length"),
        "vocab_size": len(tokens) if isinstance(tokens, list) else arch_key("vocab_size"),
        "file_type": meta.get("general.file_type"),
        "quantization": quantization_text(types),
        "tensor_types": dict(types.most_common()),
        "tensors": n_tensors,
        "chat_format": chat,
    }


def quantization_text(types: Counter) -> str:
    """The tensor types, most frequent first: "I2_S x210, F32 x121, F16 x1"."""
    return ", ".join(f"{name} x{count}" for name, count in types.most_common()) or "no tensors"
