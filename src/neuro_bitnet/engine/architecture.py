"""Model hyper-parameters and per-architecture behaviour, read from GGUF metadata."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from neuro_bitnet.errors import EngineError


@dataclass(frozen=True)
class ArchBehaviour:
    """What differs between the BitNet families the engine runs."""

    ffn_act: str  # "relu2" or "silu"
    sub_norms: bool  # attn_sub_norm / ffn_sub_norm before o_proj / down_proj
    rope_neox: bool  # rotate-half RoPE (True) or interleaved pairs (False)


# Microsoft BitNet b1.58 2B-4T: squared ReLU, sub-norms, NEOX RoPE.
# 1bitLLM bitnet_b1_58 (llama.cpp arch "bitnet"): SiLU, sub-norms, NEOX RoPE (llama.cpp's choice).
# Llama-3 8B 1.58: plain Llama block; llama.cpp's converter permutes Q/K for interleaved RoPE.
ARCHITECTURES: dict[str, ArchBehaviour] = {
    "bitnet-b1.58": ArchBehaviour(ffn_act="relu2", sub_norms=True, rope_neox=True),
    "bitnet": ArchBehaviour(ffn_act="silu", sub_norms=True, rope_neox=True),
    "llama": ArchBehaviour(ffn_act="silu", sub_norms=False, rope_neox=False),
}

# Other names of an architecture: Microsoft's first 2B-4T upload (before 2025-04-23, still on
# some mirrors) says "bitnet-25"; it is the same model and loads as "bitnet-b1.58".
ARCH_ALIASES = {"bitnet-25": "bitnet-b1.58"}


def canonical_arch(name: str) -> str:
    """The architecture a ``general.architecture`` value names (aliases resolved)."""
    return ARCH_ALIASES.get(name, name)


def ternary_shapes(n_embd: int, n_ff: int, n_head: int, n_head_kv: int, head_dim: int) -> dict[str, tuple[int, int]]:
    """(rows, cols) of each ternary matrix of a block, by GGUF short name."""
    q_dim, kv_dim = n_head * head_dim, n_head_kv * head_dim
    return {
        "attn_q": (q_dim, n_embd),
        "attn_k": (kv_dim, n_embd),
        "attn_v": (kv_dim, n_embd),
        "attn_output": (n_embd, q_dim),
        "ffn_gate": (n_ff, n_embd),
        "ffn_up": (n_ff, n_embd),
        "ffn_down": (n_embd, n_ff),
    }


# Optional key in our own files that overrides the architecture's RoPE style ("neox" / "normal").
ROPE_STYLE_KEY = "neuro_bitnet.rope_style"


@dataclass(frozen=True)
class HParams:
    """Shapes and constants of one model."""

    arch: str
    n_vocab: int
    n_embd: int
    n_ff: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    rms_eps: float
    rope_theta: float
    behaviour: ArchBehaviour

    @classmethod
    def from_metadata(cls, meta: dict[str, Any], n_vocab_fallback: int | None = None) -> "HParams":
        """Read hyper-parameters from GGUF metadata; EngineError names anything missing."""
        file_arch = meta.get("general.architecture")
        if not isinstance(file_arch, str):
            raise EngineError("GGUF metadata has no general.architecture string")
        arch = canonical_arch(file_arch)
        if arch not in ARCHITECTURES:
            supported = ", ".join(sorted([*ARCHITECTURES, *ARCH_ALIASES]))
            raise EngineError(f"unsupported architecture {file_arch!r} (supported: {supported})")

        def lookup(key: str) -> Any:
            for prefix in dict.fromkeys((file_arch, arch)):  # the file's own prefix first
                if f"{prefix}.{key}" in meta:
                    return f"{prefix}.{key}", meta[f"{prefix}.{key}"]
            return f"{file_arch}.{key}", None

        def number(key: str, kind: type, default: Any = None, required: bool = True) -> Any:
            name, value = lookup(key)
            if value is None:
                if default is None and required:
                    raise EngineError(f"GGUF metadata lacks {name}")
                return default
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                    kind is int and isinstance(value, float) and not value.is_integer()):
                raise EngineError(f"GGUF metadata {name} must be a number, not {value!r:.40}")
            return kind(value)

        behaviour = ARCHITECTURES[arch]
        style = meta.get(ROPE_STYLE_KEY)
        if style is not None:
            if style not in ("neox", "normal"):
                raise EngineError(f"{ROPE_STYLE_KEY} must be 'neox' or 'normal', not {style!r:.40}")
            behaviour = ArchBehaviour(behaviour.ffn_act, behaviour.sub_norms, style == "neox")

        n_embd = number("embedding_length", int)
        n_head = number("attention.head_count", int)
        n_head_kv = number("attention.head_count_kv", int, n_head)
        head_dim = (number("attention.key_length", int, required=False)
                    or number("rope.dimension_count", int, required=False) or 0)
        if head_dim == 0:
            if n_head <= 0 or n_embd % n_head:
                raise EngineError(f"cannot derive head size from n_embd={n_embd}, n_head={n_head}")
            head_dim = n_embd // n_head
        n_vocab = number("vocab_size", int, required=False) or n_vocab_fallback
        if not n_vocab:
            raise EngineError(f"GGUF metadata lacks {file_arch}.vocab_size and a token list")
        hp = cls(
            arch=arch,
            n_vocab=int(n_vocab),
            n_embd=n_embd,
            n_ff=number("feed_forward_length", int),
            n_layer=number("block_count", int),
            n_head=n_head,
            n_head_kv=n_head_kv,
            head_dim=head_dim,
            rms_eps=number("attention.layer_norm_rms_epsilon", float, 1e-5),
            rope_theta=number("rope.freq_base", float, 10000.0),
            behaviour=behaviour,
        )
        hp.validate()
        return hp

    def validate(self) -> None:
        """Reject shapes the engine cannot run, with a message naming the problem."""
        for name in ("n_vocab", "n_embd", "n_ff", "n_layer", "n_head", "n_head_kv", "head_dim"):
            if getattr(self, name) <= 0:
                raise EngineError(f"invalid hyper-parameter {name}={getattr(self, name)}")
        if self.n_head % self.n_head_kv:
            raise EngineError(f"n_head={self.n_head} is not a multiple of n_head_kv={self.n_head_kv}")
        if self.head_dim % 2:
            raise EngineError(f"head size {self.head_dim} must be even for RoPE")
