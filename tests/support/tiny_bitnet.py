"""A tiny random model of llama.cpp's arch `bitnet` with TQ2_0 weights, for the subprocess tests.

Upstream llama.cpp runs arch `bitnet` (1bitLLM's block: sub-norms, SiLU FFN, NEOX RoPE, head tied
to `token_embd`) and has TQ2_0 kernels, but not I2_S; so this is a model both llama.cpp and our
engine can load. What llama.cpp needs (src/models/bitnet.cpp, llama-vocab.cpp):
- tensors `token_embd`, `output_norm`, and per block `attn_norm`, `attn_sub_norm`, `attn_q/k/v`,
  `attn_output`, `ffn_norm`, `ffn_sub_norm`, `ffn_gate`, `ffn_up`, `ffn_down` (the `.scale`
  tensors are optional: TQ2_0 carries its scale in every block);
- `bitnet.attention.layer_norm_rms_epsilon` plus the usual `bitnet.*` shape keys;
- `tokenizer.ggml.model = gpt2` with `tokenizer.ggml.pre = llama-bpe` (else llama.cpp falls back
  to a different pre-tokenizer and splits text differently from ours).

Every ternary matmul has 256 inputs (n_embd = n_ff = 256): llama.cpp quantizes activations per
256-value block (Q8_K), our engine per row, and with one block per row the two are the same
arithmetic. Scales are float16 values, so TQ2_0's fp16 block scale holds them exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neuro_bitnet.engine.gguf import GGMLType, GGUFValueType
from neuro_bitnet.engine.gguf_writer import GGUFWriter
from neuro_bitnet.engine.synthetic import BITNET_CHAT_TEMPLATE
from neuro_bitnet.engine.tokenizer import Tokenizer, gguf_metadata_from_hf_tokenizer, llama3_tokenizer_json

ARCH = "bitnet"
VOCAB_LIMIT = 1000  # regular Llama-3 tokens kept; the 256 special tokens follow them
N_EMBD = 256
N_FF = 256
N_LAYER = 2
N_HEAD = 4
N_HEAD_KV = 2
CTX = 512
ROPE_THETA = 10000.0
RMS_EPS = 1e-5
# Token embeddings (also the output head) ~ N(0, 1): logits spread over ~100, so most greedy
# choices win by several units and small rounding differences between engines rarely flip
# them. Tokens that are not printable text alone (special tokens, control characters, lone
# UTF-8 bytes) get tiny rows: their logits stay near 0, far below the best text token, so the
# random model writes text instead of ending at once or printing broken characters.
EMBED_STD = 1.0
QUIET_EMBED_STD = 0.01
# Ternary scales this many times the unit-variance choice: the blocks' outputs outweigh the
# token's own embedding in the residual stream, so greedy decoding does not just repeat the
# last token forever. Not for Q and K: large attention scores make softmax nearly one-hot and
# let llama.cpp's f16 rounding of Q swing outputs by up to 14% of the logit range.
LAYER_GAIN = 6.0


def _ternary(rng: np.random.Generator, rows: int, cols: int, gain: float = LAYER_GAIN) -> tuple[np.ndarray, float]:
    values = rng.integers(-1, 2, size=(rows, cols), dtype=np.int8)
    scale = float(np.float16(gain * rng.uniform(0.8, 1.2) / np.sqrt(2.0 * cols / 3.0)))
    return values, scale


def _norm(rng: np.random.Generator, n: int) -> np.ndarray:
    return (1.0 + 0.05 * rng.standard_normal(n)).astype(np.float32)


def _quiet_tokens(tok_meta: dict) -> np.ndarray:
    """Ids of tokens that are not printable text on their own."""
    tokenizer = Tokenizer.from_gguf_metadata(tok_meta)
    quiet = []
    for i in range(len(tok_meta["tokenizer.ggml.tokens"])):
        try:
            text = tokenizer.token_bytes(i).decode("utf-8") if not tokenizer.is_special(i) else ""
        except UnicodeDecodeError:
            text = ""
        if not text or not all(c.isprintable() or c in " \t\n" for c in text):
            quiet.append(i)
    return np.array(quiet, dtype=np.int64)


def write_tiny_bitnet_tq2(path: Path, seed: int = 0) -> Path:
    """Write the tiny arch-`bitnet` TQ2_0 model to ``path`` (deterministic for ``seed``)."""
    rng = np.random.default_rng(seed)
    tok = gguf_metadata_from_hf_tokenizer(
        llama3_tokenizer_json(), vocab_limit=VOCAB_LIMIT, chat_template=BITNET_CHAT_TEMPLATE
    )
    tok["tokenizer.ggml.pre"] = "llama-bpe"
    n_vocab = len(tok["tokenizer.ggml.tokens"])
    head_dim = N_EMBD // N_HEAD

    writer = GGUFWriter(path, ARCH)
    writer.add("general.name", "neuro-bitnet tiny bitnet TQ2_0")
    for key, value in (
        ("vocab_size", n_vocab), ("context_length", CTX), ("embedding_length", N_EMBD),
        ("block_count", N_LAYER), ("feed_forward_length", N_FF), ("rope.dimension_count", head_dim),
        ("attention.head_count", N_HEAD), ("attention.head_count_kv", N_HEAD_KV),
    ):
        writer.add(f"{ARCH}.{key}", value, GGUFValueType.UINT32)
    writer.add(f"{ARCH}.attention.layer_norm_rms_epsilon", RMS_EPS, GGUFValueType.FLOAT32)
    writer.add(f"{ARCH}.rope.freq_base", ROPE_THETA, GGUFValueType.FLOAT32)
    for key, value in tok.items():
        writer.add(key, value)

    embd = rng.standard_normal((n_vocab, N_EMBD)) * EMBED_STD
    embd[_quiet_tokens(tok)] *= QUIET_EMBED_STD / EMBED_STD
    writer.add_tensor("token_embd.weight", embd.astype(np.float16), GGMLType.F16)
    n_kv = N_HEAD_KV * head_dim
    for i in range(N_LAYER):
        b = f"blk.{i}."
        writer.add_tensor(b + "attn_norm.weight", _norm(rng, N_EMBD))
        for name, rows, gain in (("attn_q", N_EMBD, 1.0), ("attn_k", n_kv, 1.0), ("attn_v", n_kv, LAYER_GAIN)):
            writer.add_ternary(b + name + ".weight", *_ternary(rng, rows, N_EMBD, gain), ggml_type=GGMLType.TQ2_0)
        writer.add_tensor(b + "attn_sub_norm.weight", _norm(rng, N_EMBD))
        writer.add_ternary(b + "attn_output.weight", *_ternary(rng, N_EMBD, N_EMBD), ggml_type=GGMLType.TQ2_0)
        writer.add_tensor(b + "ffn_norm.weight", _norm(rng, N_EMBD))
        writer.add_ternary(b + "ffn_gate.weight", *_ternary(rng, N_FF, N_EMBD), ggml_type=GGMLType.TQ2_0)
        writer.add_ternary(b + "ffn_up.weight", *_ternary(rng, N_FF, N_EMBD), ggml_type=GGMLType.TQ2_0)
        writer.add_tensor(b + "ffn_sub_norm.weight", _norm(rng, N_FF))
        writer.add_ternary(b + "ffn_down.weight", *_ternary(rng, N_EMBD, N_FF), ggml_type=GGMLType.TQ2_0)
    writer.add_tensor("output_norm.weight", _norm(rng, N_EMBD))
    return writer.write()
