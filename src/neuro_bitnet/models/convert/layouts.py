"""Which checkpoint layout a Hugging Face folder holds, and how its tensors map to GGUF.

Three layouts are supported:

- ``1bitllm``: 1bitLLM ``BitnetForCausalLM`` (bitnet_b1_58-large / -3B). Full-precision linear
  weights; BitNet sub-norms are called ``inner_attn_ln`` / ``ffn_layernorm``; SiLU.
- ``microsoft``: Microsoft ``BitNetForCausalLM`` (bitnet-b1.58-2B-4T). Linear weights packed
  four ternary rows per uint8 row with a ``weight_scale`` (``quantization_config`` offline
  ``autobitlinear``: effective weight = T * weight_scale), or bf16 master weights (the ``-bf16``
  repo, quantized here with absmean); sub-norms ``attn_sub_norm`` / ``ffn_sub_norm``; ReLU².
- ``llama``: ``LlamaForCausalLM`` with ``quantization_config.quant_method = "bitnet"``
  (HF1BitLLM Llama3-8B-1.58): packed like above, ``bitlinear`` class by default, whose
  ``weight_scale`` is the inverse (effective weight = T / weight_scale).

The GGUF architecture follows the block: sub-norms + ReLU² is ``bitnet-b1.58``, sub-norms + SiLU
is ``bitnet``, a plain Llama block is ``llama``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neuro_bitnet.engine.architecture import ternary_shapes
from neuro_bitnet.models.convert.errors import ConvertError

GGUF_ARCHES = ("bitnet", "bitnet-b1.58", "llama")
LINEARS = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
# GGUF name -> HF names to look for, first match wins (1bitLLM and Microsoft spell sub-norms differently).
BLOCK_NORMS = {
    "attn_norm": ("input_layernorm",),
    "ffn_norm": ("post_attention_layernorm",),
    "attn_sub_norm": ("self_attn.attn_sub_norm", "self_attn.inner_attn_ln"),
    "ffn_sub_norm": ("mlp.ffn_sub_norm", "mlp.ffn_layernorm"),
}
_ACTS = {"silu": "silu", "swish": "silu", "relu2": "relu2"}


@dataclass(frozen=True)
class Layout:
    """What the converter needs to know about one checkpoint."""

    source: str  # "1bitllm", "microsoft" or "llama"
    arch: str  # GGUF general.architecture
    n_vocab: int
    n_embd: int
    n_ff: int
    n_layer: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ctx: int
    rms_eps: float
    rope_theta: float
    tied: bool
    linear_class: str  # "bitlinear" (scale stored inverted) or "autobitlinear"
    name: str

    @property
    def sub_norms(self) -> bool:
        return self.arch != "llama"

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(rows, cols) of each ternary matrix, by GGUF short name."""
        return ternary_shapes(self.n_embd, self.n_ff, self.n_head, self.n_head_kv, self.head_dim)


def read_config(model_dir: Path) -> dict[str, Any]:
    """config.json of a checkpoint folder."""
    path = model_dir / "config.json"
    if not model_dir.is_dir():
        raise ConvertError(f"{model_dir} is not a directory")
    if not path.is_file():
        raise ConvertError(f"{model_dir} has no config.json; is it a Hugging Face checkpoint folder?")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConvertError(f"cannot read {path}: {exc}") from None
    if not isinstance(config, dict):
        raise ConvertError(f"{path} must hold a JSON object")
    return config


def _source_of(config: dict[str, Any]) -> str:
    archs = config.get("architectures") or []
    quant = config.get("quantization_config") or {}
    if "BitnetForCausalLM" in archs:
        return "1bitllm"
    if "BitNetForCausalLM" in archs or config.get("model_type") == "bitnet":
        return "microsoft"
    if "LlamaForCausalLM" in archs or config.get("model_type") == "llama":
        if quant.get("quant_method") == "bitnet":
            return "llama"
        raise ConvertError(
            "this LlamaForCausalLM checkpoint is not ternary (no quantization_config with "
            "quant_method 'bitnet'); only BitNet checkpoints can be converted"
        )
    raise ConvertError(
        f"unsupported architecture {', '.join(archs) or config.get('model_type') or '(none)'}; supported: "
        "BitnetForCausalLM (1bitLLM), BitNetForCausalLM (Microsoft), LlamaForCausalLM with quant_method bitnet"
    )


def _int(config: dict[str, Any], key: str, default: int | None = None) -> int:
    value = config.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConvertError(f"config.json: {key} must be a positive integer, got {value!r}")
    return value


def _rope_theta(config: dict[str, Any]) -> float:
    params = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or {}
    kind = scaling.get("rope_type") or scaling.get("type") or params.get("rope_type") or "default"
    factor = scaling.get("factor", params.get("factor", 1.0))
    if kind not in ("default", "linear") or (kind == "linear" and float(factor) != 1.0):
        raise ConvertError(f"config.json: RoPE scaling {kind!r} (factor {factor}) is not supported by the engine")
    return float(config.get("rope_theta", params.get("rope_theta", 10000.0)))


def detect_layout(model_dir: Path, arch: str = "auto") -> Layout:
    """The layout and hyper-parameters of the checkpoint in ``model_dir``.

    ``arch`` forces the GGUF architecture ("bitnet", "bitnet-b1.58", "llama"); "auto" derives it
    from the block (sub-norms or not) and ``hidden_act``.
    """
    config = read_config(model_dir)
    source = _source_of(config)
    act_name = str(config.get("hidden_act", "silu"))
    act = _ACTS.get(act_name)
    if arch == "auto":
        if act is None:
            raise ConvertError(f"config.json: activation {act_name!r} is not supported (silu or relu2)")
        if source == "llama":
            if act != "silu":
                raise ConvertError(f"config.json: a Llama block with {act_name} is not supported")
            arch = "llama"
        else:
            arch = "bitnet-b1.58" if act == "relu2" else "bitnet"
    elif arch not in GGUF_ARCHES:
        raise ConvertError(f"unknown architecture {arch!r}; choose auto, {', '.join(GGUF_ARCHES)}")

    quant = config.get("quantization_config") or {}
    if quant.get("use_rms_norm"):
        raise ConvertError("quantization_config.use_rms_norm (an extra RMSNorm inside each linear) is not supported")
    n_embd = _int(config, "hidden_size")
    n_head = _int(config, "num_attention_heads")
    head_dim = config.get("head_dim") or n_embd // n_head
    if n_embd % n_head and not config.get("head_dim"):
        raise ConvertError(f"config.json: hidden_size {n_embd} is not a multiple of num_attention_heads {n_head}")
    n_head_kv = _int(config, "num_key_value_heads", n_head)
    if n_head % n_head_kv:
        raise ConvertError(f"config.json: {n_head} attention heads are not a multiple of {n_head_kv} KV heads")
    return Layout(
        source=source,
        arch=arch,
        n_vocab=_int(config, "vocab_size"),
        n_embd=n_embd,
        n_ff=_int(config, "intermediate_size"),
        n_layer=_int(config, "num_hidden_layers"),
        n_head=n_head,
        n_head_kv=n_head_kv,
        head_dim=int(head_dim),
        n_ctx=_int(config, "max_position_embeddings", 4096),
        rms_eps=float(config.get("rms_norm_eps", 1e-6 if source == "llama" else 1e-5)),
        rope_theta=_rope_theta(config),
        tied=bool(config.get("tie_word_embeddings", source == "microsoft")),
        linear_class=str(quant.get("linear_class", "bitlinear")),
        name=str(config.get("_name_or_path") or model_dir.resolve().name),
    )
