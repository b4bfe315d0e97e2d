"""Synthetic BitNet b1.58 GGUF files: the official 2B-4T layout filled with random weights.

The file has the architecture, metadata keys, tensor names, types and shapes of Microsoft's
``ggml-model-i2_s.gguf`` (F16 ``token_embd``, F32 norms, I2_S ternary projections with one scale
per tensor, the real Llama-3 tokenizer), so engines do exactly the work they do on the real model.
The header mirrors the official one key for key (order, types, values, the placeholder chat
template), so the 2B file has the official size, 1,187,801,280 bytes.
Weights are random but well-conditioned: embeddings ~ N(0, 0.02), ternary weights uniform over
{-1, 0, +1} (a third zeros) with a scale that keeps every projection's output near unit variance,
so activations stay finite and non-degenerate through all layers.

The 2B file (~1.2 GB) is for benchmarks; tests use the ``tiny`` shapes.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import numpy as np

from neuro_bitnet.engine import quants
from neuro_bitnet.engine.chat_format import MICROSOFT_PLACEHOLDER_TEMPLATE
from neuro_bitnet.engine.gguf import DEFAULT_ALIGNMENT, GGMLType, GGUFValueType, align_up, tensor_nbytes
from neuro_bitnet.errors import ConfigError

if TYPE_CHECKING:  # the builder's modules are imported when a model is built, not to find one
    from neuro_bitnet.engine.gguf_writer import GGUFWriter

ARCH = "bitnet-b1.58"
LLAMA3_VOCAB = 128256
LLAMA3_ADDED_TOKENS = 256  # special tokens after the 128,000 regular ones
FILE_TYPE_MOSTLY_I2_S = 40  # general.file_type of the official file (bitnet.cpp's llama.h)
FORMAT_VERSION = 2  # bump when the generated content changes, so caches rebuild
# Size of Microsoft's ggml-model-i2_s.gguf (revision a1f2f1c7...), which the 2b file matches.
OFFICIAL_2B_FILE_SIZE = 1_187_801_280
ADDED_TOKEN_SCORE = -1000.0  # tokenizer.ggml.scores of the 256 special tokens (0.0 for the rest)

SYNTHETIC_SHAPES: dict[str, dict[str, Any]] = {
    "2b": dict(n_vocab=LLAMA3_VOCAB, n_embd=2560, n_ff=6912, n_layer=30, n_head=20,
               n_head_kv=5, ctx=4096, rope_theta=500000.0, rms_eps=1e-5),
    # Same structure, a real but truncated Llama-3 vocabulary (1,000 regular + 256 special).
    "tiny": dict(n_vocab=1000 + LLAMA3_ADDED_TOKENS, n_embd=256, n_ff=768, n_layer=2, n_head=4,
                 n_head_kv=2, ctx=512, rope_theta=500000.0, rms_eps=1e-5),
}

# The trained chat template of microsoft/bitnet-b1.58-2B-4T (its tokenizer_config.json, not the
# GGUF, which carries Microsoft's placeholder): "<|begin_of_text|>System: ...<|eot_id|>User: ...
# <|eot_id|>Assistant: ". Test models that want a real template use it.
BITNET_CHAT_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = message['role'] | capitalize + ': '+ message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}"
)

EMBED_STD = 0.02
EMBED_CHUNK_ROWS = 4096  # rows of token_embd generated at a time
PACKED_CHUNK_BYTES = 1 << 24  # I2_S bytes generated at a time

# All 81 bytes whose four 2-bit fields are valid ternary codes (0, 1, 2): a uniform pick among
# them is four independent uniform ternary weights, already in I2_S's packed form.
_TERNARY_BYTES = np.array(
    [(a << 6) | (b << 4) | (c << 2) | d for a in range(3) for b in range(3) for c in range(3) for d in range(3)],
    dtype=np.uint8,
)

Progress = Callable[[str, int, int], None]  # (tensor name, index, total)


def _shape(name: str) -> dict[str, Any]:
    try:
        return SYNTHETIC_SHAPES[name]
    except KeyError:
        raise ConfigError(
            f"unknown synthetic model {name!r}; choose one of: {', '.join(SYNTHETIC_SHAPES)}"
        ) from None


def _rng(seed: int, index: int) -> np.random.Generator:
    """An independent generator per tensor, so content does not depend on generation order."""
    return np.random.default_rng(np.random.SeedSequence([seed, index]))


@lru_cache(maxsize=1)
def _normal_f16_table() -> np.ndarray:
    """65,536 float16 quantiles of N(0, EMBED_STD): indexing it with uniform random uint16 values
    samples the normal distribution (to 1/65536 resolution) far faster than drawing floats."""
    from statistics import NormalDist

    dist = NormalDist(0.0, EMBED_STD)
    return np.array([dist.inv_cdf((i + 0.5) / 65536) for i in range(65536)], dtype=np.float16)


def _embedding(rng: np.random.Generator, rows: int, cols: int) -> Iterator[np.ndarray]:
    """N(0, EMBED_STD) float16 matrix, yielded a block of rows at a time."""
    table = _normal_f16_table()
    for lo in range(0, rows, EMBED_CHUNK_ROWS):
        n = (min(lo + EMBED_CHUNK_ROWS, rows) - lo) * cols
        yield table[np.frombuffer(rng.bytes(2 * n), dtype="<u2")]


def _ternary_i2s(rng: np.random.Generator, n_weights: int, scale: float) -> Iterator[np.ndarray]:
    """I2_S bytes (packed weights, float32 scale, padding) of uniform random ternary weights,
    yielded in chunks."""
    if n_weights % quants.I2S_BLOCK:
        raise ValueError(f"synthetic ternary tensors hold whole 128-weight blocks, not {n_weights}")
    packed_len = n_weights // 4
    for lo in range(0, packed_len, PACKED_CHUNK_BYTES):
        hi = min(lo + PACKED_CHUNK_BYTES, packed_len)
        yield _TERNARY_BYTES[rng.integers(0, _TERNARY_BYTES.size, hi - lo, dtype=np.uint8)]
    trailer = np.zeros(quants.I2S_TRAILER, dtype=np.uint8)
    trailer[:4] = np.frombuffer(np.float32(scale).tobytes(), dtype=np.uint8)
    yield trailer


def _norm(rng: np.random.Generator, n: int) -> np.ndarray:
    """RMSNorm gains around 1, as in a trained model."""
    return (1.0 + 0.05 * rng.standard_normal(n)).astype(np.float32)


def _ternary_scale(rng: np.random.Generator, n_in: int) -> float:
    """Scale giving unit output variance for unit-variance inputs (2/3 of weights are +-1)."""
    return float(rng.uniform(0.8, 1.2) / np.sqrt(2.0 * n_in / 3.0))


def _tensor_plan(s: dict[str, Any]) -> list[tuple[str, tuple[int, ...], GGMLType, str, int]]:
    """(name, numpy shape, type, kind, input width) for every tensor, in file order."""
    n_embd, n_ff = s["n_embd"], s["n_ff"]
    n_kv = s["n_head_kv"] * (n_embd // s["n_head"])
    plan: list[tuple[str, tuple[int, ...], GGMLType, str, int]] = [
        ("token_embd.weight", (s["n_vocab"], n_embd), GGMLType.F16, "embed", 0),
    ]
    for i in range(s["n_layer"]):
        b = f"blk.{i}."
        plan += [
            (b + "attn_norm.weight", (n_embd,), GGMLType.F32, "norm", 0),
            (b + "attn_q.weight", (n_embd, n_embd), GGMLType.I2_S, "ternary", n_embd),
            (b + "attn_k.weight", (n_kv, n_embd), GGMLType.I2_S, "ternary", n_embd),
            (b + "attn_v.weight", (n_kv, n_embd), GGMLType.I2_S, "ternary", n_embd),
            (b + "attn_sub_norm.weight", (n_embd,), GGMLType.F32, "norm", 0),
            (b + "attn_output.weight", (n_embd, n_embd), GGMLType.I2_S, "ternary", n_embd),
            (b + "ffn_norm.weight", (n_embd,), GGMLType.F32, "norm", 0),
            (b + "ffn_gate.weight", (n_ff, n_embd), GGMLType.I2_S, "ternary", n_embd),
            (b + "ffn_up.weight", (n_ff, n_embd), GGMLType.I2_S, "ternary", n_embd),
            (b + "ffn_sub_norm.weight", (n_ff,), GGMLType.F32, "norm", 0),
            (b + "ffn_down.weight", (n_embd, n_ff), GGMLType.I2_S, "ternary", n_ff),
        ]
    plan.append(("output_norm.weight", (n_embd,), GGMLType.F32, "norm", 0))
    return plan


def _metadata(name: str, s: dict[str, Any]) -> list[tuple[str, Any, GGUFValueType]]:
    """The official file's 24 keys after general.architecture, in its order, types and values
    (see OFFICIAL_2B_FILE_SIZE); only the shape values and the vocabulary follow ``s``."""
    n_embd, n_head = s["n_embd"], s["n_head"]
    if n_embd % n_head:
        raise ConfigError(f"synthetic shape {name!r}: n_embd {n_embd} is not a multiple of n_head {n_head}")
    limit = None if s["n_vocab"] == LLAMA3_VOCAB else s["n_vocab"] - LLAMA3_ADDED_TOKENS
    tok = _tokenizer_metadata(limit)
    tokens = tok["tokenizer.ggml.tokens"]
    if len(tokens) != s["n_vocab"]:
        raise ConfigError(
            f"synthetic shape {name!r}: tokenizer has {len(tokens)} tokens, not n_vocab={s['n_vocab']}"
        )
    n_regular = len(tokens) - LLAMA3_ADDED_TOKENS
    scores = np.zeros(len(tokens), dtype=np.float32)
    scores[n_regular:] = ADDED_TOKEN_SCORE
    p, u32, f32 = ARCH + ".", GGUFValueType.UINT32, GGUFValueType.FLOAT32
    eos = tok["tokenizer.ggml.eos_token_id"]
    return [
        ("general.name", "bitnet2b" if name == "2b" else f"bitnet2b-{name}", GGUFValueType.STRING),
        (p + "vocab_size", s["n_vocab"], u32),
        (p + "context_length", s["ctx"], u32),
        (p + "embedding_length", n_embd, u32),
        (p + "block_count", s["n_layer"], u32),
        (p + "feed_forward_length", s["n_ff"], u32),
        (p + "rope.dimension_count", n_embd // n_head, u32),
        (p + "attention.head_count", n_head, u32),
        (p + "attention.head_count_kv", s["n_head_kv"], u32),
        ("tokenizer.ggml.add_bos_token", True, GGUFValueType.BOOL),
        (p + "attention.layer_norm_rms_epsilon", float(s["rms_eps"]), f32),
        (p + "rope.freq_base", float(s["rope_theta"]), f32),
        ("general.file_type", FILE_TYPE_MOSTLY_I2_S, u32),
        ("tokenizer.ggml.model", tok["tokenizer.ggml.model"], GGUFValueType.STRING),
        ("tokenizer.ggml.tokens", tokens, GGUFValueType.STRING),
        ("tokenizer.ggml.scores", scores, f32),
        ("tokenizer.ggml.token_type", np.asarray(tok["tokenizer.ggml.token_type"], dtype=np.int32),
         GGUFValueType.INT32),
        ("tokenizer.ggml.merges", tok["tokenizer.ggml.merges"], GGUFValueType.STRING),
        ("tokenizer.ggml.bos_token_id", tok["tokenizer.ggml.bos_token_id"], u32),
        ("tokenizer.ggml.eos_token_id", eos, u32),
        ("tokenizer.ggml.padding_token_id", eos, u32),
        ("tokenizer.chat_template", MICROSOFT_PLACEHOLDER_TEMPLATE, GGUFValueType.STRING),
        ("general.quantization_version", 2, u32),
    ]


@lru_cache(maxsize=2)
def _tokenizer_metadata(vocab_limit: int | None) -> dict[str, Any]:
    """The Llama-3 tokenizer keys (slow to derive, so kept for the next build; read-only)."""
    from neuro_bitnet.engine.tokenizer import gguf_metadata_from_hf_tokenizer, llama3_tokenizer_json

    return gguf_metadata_from_hf_tokenizer(llama3_tokenizer_json(), vocab_limit=vocab_limit)


def _writer(name: str, path: Path) -> GGUFWriter:
    """The writer for ``name`` with its metadata and tensor list (tensor bytes come lazily)."""
    s = _shape(name)
    from neuro_bitnet.engine.gguf_writer import GGUFWriter

    writer = GGUFWriter(path, ARCH)
    for key, value, vtype in _metadata(name, s):
        writer.add(key, value, vtype)
    return writer


def build_synthetic_model(name: str, path: Path, *, seed: int = 0, progress: Progress | None = None) -> Path:
    """Write the synthetic model ``name`` (a key of SYNTHETIC_SHAPES) to ``path``; returns it.

    Deterministic for a given ``seed``. ``progress(tensor_name, index, total)`` is called as each
    tensor is generated. The file appears atomically (written beside ``path``, then renamed).
    """
    writer = _writer(name, path)
    plan = _tensor_plan(_shape(name))
    for index, (tname, shape, ggml_type, kind, n_in) in enumerate(plan):
        writer.add_lazy(tname, shape, ggml_type, _producer(seed, index, len(plan), tname, shape, kind, n_in, progress))
    return writer.write()


def header_size(name: str) -> int:
    """Bytes of the synthetic model's header (metadata and tensor table, aligned), computed
    without generating any tensor data."""
    writer = _writer(name, Path("unused.gguf"))
    for tname, shape, ggml_type, _, _ in _tensor_plan(_shape(name)):
        writer.add_lazy(tname, shape, ggml_type, lambda: iter(()))
    return writer.header_size()


def file_size(name: str) -> int:
    """Bytes of the synthetic model file ``name`` (header plus aligned tensor data)."""
    data = 0
    for _, shape, ggml_type, _, _ in _tensor_plan(_shape(name)):
        data = align_up(data + tensor_nbytes(ggml_type, int(np.prod(shape))), DEFAULT_ALIGNMENT)
    return header_size(name) + data


def _producer(seed: int, index: int, total: int, name: str, shape: tuple[int, ...], kind: str,
              n_in: int, progress: Progress | None) -> Callable[[], Iterator[np.ndarray]]:
    def produce() -> Iterator[np.ndarray]:
        if progress is not None:
            progress(name, index, total)
        rng = _rng(seed, index)
        if kind == "embed":
            return _embedding(rng, shape[0], shape[1])
        if kind == "norm":
            return iter([_norm(rng, shape[0])])
        return _ternary_i2s(rng, int(np.prod(shape)), _ternary_scale(rng, n_in))

    return produce


def synthetic_file(name: str, cache_dir: Path) -> Path:
    """Where the synthetic model ``name`` lives in ``cache_dir`` (whether built yet or not)."""
    _shape(name)
    return Path(cache_dir) / f"synthetic-bitnet-b1.58-{name}-v{FORMAT_VERSION}.gguf"


def synthetic_model_path(name: str, cache_dir: Path) -> Path:
    """Path of the synthetic model ``name`` (seed 0) in ``cache_dir``, built on first use.

    Concurrent callers wait on a file lock; only one builds, and a half-written file is never
    visible under the final name.
    """
    path = synthetic_file(name, cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file():
        return path
    from filelock import FileLock

    with FileLock(str(path) + ".lock"):
        if not path.is_file():
            build_synthetic_model(name, path)
    return path


__all__ = [
    "BITNET_CHAT_TEMPLATE",
    "OFFICIAL_2B_FILE_SIZE",
    "SYNTHETIC_SHAPES",
    "build_synthetic_model",
    "file_size",
    "header_size",
    "synthetic_file",
    "synthetic_model_path",
]
