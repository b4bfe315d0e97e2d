"""Convert a Hugging Face BitNet checkpoint folder into a GGUF file the engine runs.

Output layout (the official ``bitnet-b1.58`` GGUF's, for every architecture): ternary linears
as I2_S over the flattened tensor (one f32 scale per tensor), norms F32, ``token_embd`` and
``output`` F16 (BF16 kept as BF16, so nothing is rounded), the tokenizer in ``tokenizer.*``.
Every tensor is produced lazily while the file is written, so memory holds one slab at a time.

RoPE: 1bitLLM and Microsoft checkpoints keep transformers' rotate-half order and the file says
``neuro_bitnet.rope_style = "neox"``; for Llama checkpoints the Q/K rows are permuted as
llama.cpp's converter does and the file says ``"normal"`` (interleaved pairs).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neuro_bitnet.engine.gguf import GGMLType, GGUFValueType, tensor_nbytes
from neuro_bitnet.engine.gguf_writer import GGUFWriter
from neuro_bitnet.engine.quants import quantize_bf16
from neuro_bitnet.models.convert import ternary
from neuro_bitnet.models.convert.errors import ConvertError
from neuro_bitnet.models.convert.layouts import BLOCK_NORMS, LINEARS, Layout, detect_layout
from neuro_bitnet.models.convert.safetensors_reader import Checkpoint, TensorRef, read_all, read_rows, row_slabs
from neuro_bitnet.models.convert.vocab import pad_vocab, tokenizer_metadata
from neuro_bitnet.models.progress import NullProgress, ProgressReporter

ROPE_STYLE_KEY = "neuro_bitnet.rope_style"
SOURCE_KEY = "neuro_bitnet.converted_from"
_FLOAT_SLAB = 16 << 20


@dataclass(frozen=True)
class ConvertResult:
    """A converted file and what went into it."""

    path: Path
    layout: Layout
    n_tensors: int
    size: int


def _float_producer(ref: TensorRef, ggml_type: GGMLType) -> Callable[[], Iterator[Any]]:
    def produce() -> Iterator[Any]:
        for start, stop in row_slabs(ref, _FLOAT_SLAB):
            if ggml_type == GGMLType.BF16 and ref.dtype == "BF16":
                yield read_rows(ref, start, stop, as_float32=False)  # bf16 bits, untouched
                continue
            rows = read_rows(ref, start, stop)
            if ggml_type == GGMLType.F32:
                yield np.ascontiguousarray(rows, dtype="<f4")
            elif ggml_type == GGMLType.F16:
                yield np.ascontiguousarray(rows, dtype="<f2")
            else:
                yield quantize_bf16(rows)

    return produce


def _matrix_type(ref: TensorRef) -> GGMLType:
    """F16 for F16/F32/F64 sources (as llama.cpp), BF16 kept (exact; the engine runs it)."""
    if not ref.is_float:
        raise ConvertError(f"tensor {ref.name} is {ref.dtype}; expected floating-point weights")
    return GGMLType.BF16 if ref.dtype == "BF16" else GGMLType.F16


class _Plan:
    """The GGUF tensors to write, each a (shape, type, producer)."""

    def __init__(self) -> None:
        self.tensors: dict[str, tuple[tuple[int, ...], GGMLType, Callable[[], Iterable[Any]]]] = {}

    def add(self, name: str, shape: tuple[int, ...], ggml_type: GGMLType, produce: Callable[[], Iterable[Any]]) -> None:
        self.tensors[name] = (shape, ggml_type, produce)

    def nbytes(self) -> int:
        return sum(tensor_nbytes(t, int(np.prod(s))) for s, t, _ in self.tensors.values())


def _find(ckpt: Checkpoint, candidates: Iterable[str]) -> TensorRef:
    names = list(candidates)
    for name in names:
        if name in ckpt:
            return ckpt.get(name)
    raise ConvertError(f"{ckpt.dir.name}: checkpoint has no tensor {names[0]}")


def _norm(plan: _Plan, ckpt: Checkpoint, gguf_name: str, hf_names: Iterable[str], length: int) -> None:
    ref = _find(ckpt, hf_names)
    if ref.n_elements != length or not ref.is_float:
        raise ConvertError(f"tensor {ref.name}: expected {length} float values, got {ref.dtype} {ref.shape}")
    plan.add(gguf_name, (length,), GGMLType.F32, lambda: (read_all(ref).astype("<f4"),))


def _linear(plan: _Plan, ckpt: Checkpoint, layout: Layout, layer: int, hf: str, short: str) -> None:
    rows, cols = layout.linear_shapes()[short]
    weight = ckpt.get(f"model.layers.{layer}.{hf}.weight")
    scale_name = f"model.layers.{layer}.{hf}.weight_scale"
    permute_heads = None
    if layout.arch == "llama" and short in ("attn_q", "attn_k"):
        permute_heads = layout.n_head if short == "attn_q" else layout.n_head_kv
    name = f"blk.{layer}.{short}.weight"
    if weight.dtype == "U8":
        if scale_name not in ckpt:
            raise ConvertError(f"packed tensor {weight.name} has no {scale_name}")
        values, scale = ternary.packed_ternary(weight, ckpt.get(scale_name), rows, cols, layout.linear_class)
    elif permute_heads is not None:
        values, scale = ternary.float_ternary(weight, rows, cols)
    else:
        plan.add(name, (rows, cols), GGMLType.I2_S, ternary.absmean_i2s(weight, rows, cols))
        return
    if permute_heads is not None:
        values = ternary.permute_for_interleaved_rope(values, permute_heads)
    plan.add(name, (rows, cols), GGMLType.I2_S, ternary.values_i2s(values, scale))


def _embedding(plan: _Plan, name: str, ref: TensorRef, layout: Layout) -> None:
    if len(ref.shape) != 2 or ref.shape[1] != layout.n_embd:
        raise ConvertError(f"tensor {ref.name} has shape {ref.shape}, expected (vocab, {layout.n_embd})")
    ggml_type = _matrix_type(ref)
    plan.add(name, ref.shape, ggml_type, _float_producer(ref, ggml_type))


def _plan_tensors(ckpt: Checkpoint, layout: Layout) -> tuple[_Plan, list[str]]:
    plan, notes = _Plan(), []
    embed = ckpt.get("model.embed_tokens.weight")
    _embedding(plan, "token_embd.weight", embed, layout)
    for layer in range(layout.n_layer):
        prefix = f"model.layers.{layer}"
        _norm(plan, ckpt, f"blk.{layer}.attn_norm.weight", [f"{prefix}.input_layernorm.weight"], layout.n_embd)
        for hf, short in list(LINEARS.items())[:3]:
            _linear(plan, ckpt, layout, layer, hf, short)
        if layout.sub_norms:
            _norm(plan, ckpt, f"blk.{layer}.attn_sub_norm.weight",
                  [f"{prefix}.{n}.weight" for n in BLOCK_NORMS["attn_sub_norm"]], layout.n_head * layout.head_dim)
        _linear(plan, ckpt, layout, layer, "self_attn.o_proj", "attn_output")
        _norm(plan, ckpt, f"blk.{layer}.ffn_norm.weight", [f"{prefix}.post_attention_layernorm.weight"], layout.n_embd)
        _linear(plan, ckpt, layout, layer, "mlp.gate_proj", "ffn_gate")
        _linear(plan, ckpt, layout, layer, "mlp.up_proj", "ffn_up")
        if layout.sub_norms:
            _norm(plan, ckpt, f"blk.{layer}.ffn_sub_norm.weight",
                  [f"{prefix}.{n}.weight" for n in BLOCK_NORMS["ffn_sub_norm"]], layout.n_ff)
        _linear(plan, ckpt, layout, layer, "mlp.down_proj", "ffn_down")
    extra = [n for n in ckpt.tensors if n.startswith(f"model.layers.{layout.n_layer}.")]
    if extra:
        raise ConvertError(f"checkpoint has more layers than num_hidden_layers={layout.n_layer} ({extra[0]})")
    _norm(plan, ckpt, "output_norm.weight", ["model.norm.weight"], layout.n_embd)
    if "lm_head.weight" in ckpt and not layout.tied:
        _embedding(plan, "output.weight", ckpt.get("lm_head.weight"), layout)
        if ckpt.get("lm_head.weight").shape[0] != embed.shape[0]:
            raise ConvertError("lm_head.weight and embed_tokens.weight have different vocabulary sizes")
    elif not layout.tied:
        notes.append("no lm_head.weight in the checkpoint: the head is tied to the embeddings")
    return plan, notes


def _metadata(writer: GGUFWriter, layout: Layout, n_vocab: int, tokenizer: dict[str, Any]) -> None:
    arch = layout.arch
    writer.add("general.name", layout.name)
    for key, value in (
        ("vocab_size", n_vocab),
        ("context_length", layout.n_ctx),
        ("embedding_length", layout.n_embd),
        ("block_count", layout.n_layer),
        ("feed_forward_length", layout.n_ff),
        ("rope.dimension_count", layout.head_dim),
        ("attention.head_count", layout.n_head),
        ("attention.head_count_kv", layout.n_head_kv),
    ):
        writer.add(f"{arch}.{key}", value, GGUFValueType.UINT32)
    writer.add(f"{arch}.attention.layer_norm_rms_epsilon", layout.rms_eps, GGUFValueType.FLOAT32)
    writer.add(f"{arch}.rope.freq_base", layout.rope_theta, GGUFValueType.FLOAT32)
    writer.add(ROPE_STYLE_KEY, "normal" if arch == "llama" else "neox")
    writer.add(SOURCE_KEY, layout.source)
    for key, value in tokenizer.items():
        writer.add(key, value)


class _Counting:
    """Wraps a producer so each chunk advances the progress by its size."""

    def __init__(self, produce: Callable[[], Iterable[Any]], progress: ProgressReporter) -> None:
        self.produce, self.progress = produce, progress

    def __call__(self) -> Iterator[Any]:
        for chunk in self.produce():
            self.progress.advance(memoryview(chunk).nbytes)
            yield chunk


def convert_checkpoint(
    model_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    arch: str = "auto",
    progress: ProgressReporter | None = None,
    label: str | None = None,
    notes: list[str] | None = None,
) -> ConvertResult:
    """Convert the Hugging Face checkpoint in ``model_dir`` to a GGUF at ``out`` (written atomically).

    ``arch``: "auto" or a GGUF architecture to force ("bitnet", "bitnet-b1.58", "llama").
    Raises ConvertError with a one-line message for anything it cannot convert; messages about
    assumptions it made are appended to ``notes``.
    """
    model_dir, out = Path(model_dir), Path(out)
    layout = detect_layout(model_dir, arch)
    ckpt = Checkpoint(model_dir)
    plan, plan_notes = _plan_tensors(ckpt, layout)
    if notes is not None:
        notes.extend(plan_notes)
    n_vocab = ckpt.get("model.embed_tokens.weight").shape[0]
    tokenizer = pad_vocab(tokenizer_metadata(model_dir), n_vocab)
    writer = GGUFWriter(out, layout.arch)
    _metadata(writer, layout, n_vocab, tokenizer)
    progress = progress or NullProgress()
    for name, (shape, ggml_type, produce) in plan.tensors.items():
        writer.add_lazy(name, shape, ggml_type, _Counting(produce, progress))
    progress.start(label or out.name, plan.nbytes(), 0)
    try:
        writer.write()
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise ConvertError(f"cannot write {out}{where}: {exc.strerror or exc}") from None
    finally:
        progress.finish()
    return ConvertResult(out, layout, len(plan.tensors), out.stat().st_size)
