"""Build the tiny Hugging Face checkpoints in tests/fixtures/hf/ for the converter's tests.

    pip install -e ".[fixtures]"          # torch, transformers, accelerate, sentencepiece
    python tools/make_hf_checkpoints.py    # or: python tools/make_hf_checkpoints.py llama-1.58

Each folder is a checkpoint in one of the layouts `neuro model convert` reads, written the way
the real repositories are (config.json, safetensors, tokenizer files), plus `reference.npz`:
logits of `transformers` for a few prompts (see tests/fixtures/hf/README.md).

- `1bitllm`, `1bitllm-ff320`: 1bitLLM BitnetForCausalLM (full-precision weights, Llama-2
  SentencePiece tokenizer trained here with `sentencepiece`). transformers has no such class
  (the real repos ship it as remote code); the reference is transformers' BitNetForCausalLM with
  SiLU and *online* AutoBitLinear (absmean weights per tensor, int8 activations), which is
  exactly 1bitLLM's BitLinear, holding the same weights under its own names.
- `microsoft-2b`: Microsoft BitNetForCausalLM, packed uint8 + weight_scale (offline
  autobitlinear), built from the weights of tests/fixtures/bitnet-b1.58/model.gguf, so the
  converted file must equal that official-layout GGUF tensor for tensor.
- `microsoft-bf16`: the same class with bf16 master weights (online autobitlinear).
- `llama-1.58`: LlamaForCausalLM with quant_method bitnet (BitLinear: packed, inverse scale),
  bf16, two shards and an index, Llama-3 BPE tokenizer with a chat template.

Every reference except the 1bitLLM ones is computed by loading the folder itself with
`AutoModelForCausalLM.from_pretrained`, so the files are proven to mean what we say.
"""

from __future__ import annotations

import os

os.environ.setdefault("TORCH_COMPILE_DISABLE", "1")

import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "hf"
sys.path.insert(0, str(ROOT / "src"))

from transformers import AutoModelForCausalLM, BitNetConfig, BitNetForCausalLM  # noqa: E402
from transformers.integrations.bitnet import AutoBitLinear, pack_weights  # noqa: E402

from neuro_bitnet.engine.gguf import GGUFFile  # noqa: E402
from neuro_bitnet.engine.quants import unpack_i2s_codes  # noqa: E402
from neuro_bitnet.engine.tokenizer import llama3_tokenizer_json  # noqa: E402

SEED = 4321
VOCAB_LIMIT = 320  # Llama-3 BPE: first 320 regular tokens + the 256 special tokens
PROMPT_LENGTHS = (8, 12)
MIN_MARGIN = 0.25  # every prompt position's top-1 must beat top-2 by this much (see README)
# Every int8 activation x*s must lie this far (in quantization steps) from a rounding boundary,
# so float noise elsewhere (another summation order) cannot flip one and cascade (see README).
MIN_BOUNDARY = 1e-4
MAX_DRAWS = 20000
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n"
    "{{ m['content'] }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}"
    "<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)
SPM_TEXT = [
    "The quick brown fox jumps over the lazy dog while the cat sleeps in the sun.",
    "BitNet models use ternary weights: minus one, zero and plus one, with one scale per tensor.",
    "In 2024 there were 365 days, 52 weeks and 12 months; the year before had 365 days too.",
    "She sells sea shells by the sea shore, and the shells she sells are surely sea shells.",
    "A converter reads safetensors shards and writes a GGUF file that the engine can run.",
    "Hello world! How are you today? I am fine, thank you very much for asking.",
]
TOKENIZER_PROBES = [
    "Hello world",
    "The quick brown fox jumps over the lazy dog.",
    "  two  spaces and\ttabs\nnew line",
    "numbers 12345 and 3.14",
    "unicode: café, 日本語, emoji 🚀",
    "ternary weights",
]


@dataclass(frozen=True)
class Dims:
    n_embd: int
    n_ff: int
    n_layer: int
    n_head: int
    n_head_kv: int
    rope_theta: float
    tied: bool


# ----------------------------------------------------------------------------- helpers
def to_bf16(a: np.ndarray) -> np.ndarray:
    """float32 values rounded to bfloat16 (kept as float32)."""
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(torch.bfloat16).float().numpy()


def bf16_tensor(a: np.ndarray) -> torch.Tensor:
    """A bfloat16 torch tensor of float32 values (numpy has no bfloat16 dtype)."""
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)).to(torch.bfloat16)


def save(path: Path, tensors: dict[str, object]) -> None:
    """Save numpy arrays and bf16 torch tensors (safetensors.torch handles the bf16 dtype)."""
    from safetensors.torch import save_file as save_torch

    save_torch({k: v if isinstance(v, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(v))
                for k, v in tensors.items()}, str(path))


def hf_pack(values: np.ndarray) -> np.ndarray:
    """transformers' own pack_weights: 4 ternary rows per uint8 row."""
    return pack_weights(torch.from_numpy(values.astype(np.int8)).clone()).numpy()


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def linear_shapes(d: Dims) -> dict[str, tuple[int, int]]:
    hd = d.n_embd // d.n_head
    return {
        "q_proj": (d.n_head * hd, d.n_embd), "k_proj": (d.n_head_kv * hd, d.n_embd),
        "v_proj": (d.n_head_kv * hd, d.n_embd), "o_proj": (d.n_embd, d.n_head * hd),
        "gate_proj": (d.n_ff, d.n_embd), "up_proj": (d.n_ff, d.n_embd), "down_proj": (d.n_embd, d.n_ff),
    }


def module_path(layer: int, proj: str) -> str:
    return f"model.layers.{layer}.{'self_attn' if proj in LINEARS[:4] else 'mlp'}.{proj}"


def random_float_weights(d: Dims, n_vocab: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Full-precision weights (transformers/Microsoft names) that keep activations O(1)."""
    w: dict[str, np.ndarray] = {
        "model.embed_tokens.weight": rng.normal(0, 2.5 / np.sqrt(d.n_embd), (n_vocab, d.n_embd)),
        "model.norm.weight": rng.uniform(0.8, 1.2, d.n_embd),
    }
    if not d.tied:
        w["lm_head.weight"] = rng.normal(0, 2.5 / np.sqrt(d.n_embd), (n_vocab, d.n_embd))
    for layer in range(d.n_layer):
        p = f"model.layers.{layer}"
        w[f"{p}.input_layernorm.weight"] = rng.uniform(0.8, 1.2, d.n_embd)
        w[f"{p}.post_attention_layernorm.weight"] = rng.uniform(0.8, 1.2, d.n_embd)
        w[f"{p}.self_attn.attn_sub_norm.weight"] = rng.uniform(0.8, 1.2, d.n_embd)
        w[f"{p}.mlp.ffn_sub_norm.weight"] = rng.uniform(0.8, 1.2, d.n_ff)
        for proj, (rows, cols) in linear_shapes(d).items():
            gain = (1.5 if proj in ("q_proj", "k_proj") else 1.0) * rng.uniform(0.7, 1.4)
            w[f"{module_path(layer, proj)}.weight"] = rng.normal(0, gain / np.sqrt(cols), (rows, cols))
    return {k: v.astype(np.float32) for k, v in w.items()}


def absmean(w: np.ndarray) -> tuple[np.ndarray, float]:
    scale = float(np.float16(np.abs(w).mean()))
    return np.clip(np.round(w / scale), -1, 1).astype(np.int8), scale


# ----------------------------------------------------------------------------- tokenizers
def llama3_small_tokenizer(dest: Path, chat_template: str | None = None) -> None:
    """The real Llama-3 tokenizer.json cut to its first VOCAB_LIMIT tokens + the specials."""
    data = json.loads(llama3_tokenizer_json().read_text(encoding="utf-8"))
    vocab = {t: i for t, i in data["model"]["vocab"].items() if i < VOCAB_LIMIT}
    merges = []
    for m in data["model"]["merges"]:
        a, b = m.split(" ", 1) if isinstance(m, str) else m
        if a in vocab and b in vocab and a + b in vocab:
            merges.append(m)
    data["model"]["vocab"] = vocab
    data["model"]["merges"] = merges
    for n, tok in enumerate(sorted(data["added_tokens"], key=lambda t: t["id"])):
        tok["id"] = VOCAB_LIMIT + n
    data["post_processor"] = None
    (dest / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    config = {
        "bos_token": "<|begin_of_text|>",
        "eos_token": "<|eot_id|>" if chat_template else "<|end_of_text|>",
        "add_bos_token": True,
        "tokenizer_class": "PreTrainedTokenizerFast",
    }
    if chat_template:
        config["chat_template"] = chat_template
    write_json(dest / "tokenizer_config.json", config)


def bpe_reference(dest: Path) -> dict[str, list[int]]:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(dest / "tokenizer.json"))
    return {text: tok.encode(text, add_special_tokens=False).ids for text in TOKENIZER_PROBES}


def train_sentencepiece(workdir: Path) -> Path:
    """A tiny Llama-2 style SentencePiece BPE model (byte fallback, dummy prefix, identity norm)."""
    import sentencepiece as spm

    corpus = workdir / "corpus.txt"
    corpus.write_text("\n".join(SPM_TEXT * 20) + "\n", encoding="utf-8")
    prefix = workdir / "spm"
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(prefix), model_type="bpe", vocab_size=320,
        byte_fallback=True, character_coverage=1.0, split_digits=True, add_dummy_prefix=True,
        remove_extra_whitespaces=False, normalization_rule_name="identity",
        allow_whitespace_only_pieces=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
        num_threads=1, minloglevel=2,
    )
    return prefix.with_suffix(".model")


def spm_tokenizer(dest: Path, model: Path) -> int:
    """tokenizer.model + 1bitLLM-style tokenizer_config.json with an added <pad>; token count."""
    import sentencepiece as spm

    shutil.copy(model, dest / "tokenizer.model")
    n = spm.SentencePieceProcessor(model_file=str(model)).get_piece_size()
    write_json(dest / "tokenizer_config.json", {
        "add_bos_token": True, "add_eos_token": False, "bos_token": "<s>", "eos_token": "</s>",
        "unk_token": "<unk>", "pad_token": "<pad>", "tokenizer_class": "BitnetTokenizer",
        "added_tokens_decoder": {str(n): {"content": "<pad>", "special": True}},
    })
    return n + 1


def spm_reference(dest: Path) -> dict[str, list[int]]:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(dest / "tokenizer.model"))
    return {text: sp.encode(text) for text in TOKENIZER_PROBES}


# ----------------------------------------------------------------------------- references
@torch.no_grad()
def reference(model, rng: np.random.Generator, bos: int, n_regular: int) -> dict[str, np.ndarray]:
    """Prompts of random regular tokens whose every position has a clear top-1, and the logits.

    No BOS first: the logits after a lone BOS are the same for every prompt, so a near-tie there
    could never be drawn away.
    """
    model.eval()
    n, max_len = len(PROMPT_LENGTHS), max(PROMPT_LENGTHS)
    n_vocab = model.config.vocab_size
    ref = {
        "tokens": np.full((n, max_len), -1, dtype=np.int32),
        "lengths": np.array(PROMPT_LENGTHS, dtype=np.int32),
        "logits": np.zeros((n, max_len, n_vocab), dtype=np.float32),
    }
    gaps: list[float] = []

    def watch(module, args) -> None:
        x = args[0].float()
        v = x * (127 / x.abs().max(dim=-1, keepdim=True).values.clamp(min=1e-5))
        gaps.append(float(((v - v.floor()) - 0.5).abs().min()))

    hooks = [m.register_forward_pre_hook(watch) for m in model.modules()
             if type(m).__name__ in ("AutoBitLinear", "BitLinear")]
    for i, length in enumerate(PROMPT_LENGTHS):
        for _ in range(MAX_DRAWS):
            prompt = rng.integers(3, n_regular, length).tolist()
            gaps.clear()
            logits = model(torch.tensor([prompt])).logits[0].float().numpy()
            top2 = np.sort(logits, axis=-1)[:, -2:]
            if (top2[:, 1] - top2[:, 0]).min() >= MIN_MARGIN and min(gaps) >= MIN_BOUNDARY:
                break
        else:
            raise RuntimeError(f"no prompt of length {length} with margins >= {MIN_MARGIN} and "
                               f"activations >= {MIN_BOUNDARY} from rounding boundaries")
        ref["tokens"][i, :length] = prompt
        ref["logits"][i, :length] = logits
    for h in hooks:
        h.remove()
    return ref


def load_folder(dest: Path):
    """The folder as transformers loads it, then every float tensor widened to float32.

    A quantized load keeps the checkpoint's dtype (and `.float()` is refused), and BitLinear
    would run its integer matmul in bf16; the reference is meant to be exact float32 arithmetic.
    """
    from transformers.integrations.bitnet import BitLinear

    model = AutoModelForCausalLM.from_pretrained(dest, dtype=torch.float32, attn_implementation="eager")
    for module in model.modules():
        for name, tensor in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
            if tensor.is_floating_point() and tensor.dtype != torch.float32:
                tensor.data = tensor.data.float()
        if isinstance(module, BitLinear):
            module.dtype = torch.float32
    return model


def online_bitnet_reference(weights: dict[str, np.ndarray], d: Dims, n_vocab: int, bos: int, eos: int):
    """transformers BitNetForCausalLM, SiLU, online AutoBitLinear: 1bitLLM's arithmetic."""
    config = BitNetConfig(
        vocab_size=n_vocab, hidden_size=d.n_embd, intermediate_size=d.n_ff, num_hidden_layers=d.n_layer,
        num_attention_heads=d.n_head, num_key_value_heads=d.n_head_kv, hidden_act="silu",
        max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=d.tied,
        rope_parameters={"rope_type": "default", "rope_theta": d.rope_theta},
        bos_token_id=bos, eos_token_id=eos, pad_token_id=None,
    )
    config._attn_implementation = "eager"
    model = BitNetForCausalLM(config).eval()
    for layer in range(d.n_layer):
        for proj in LINEARS:
            path = module_path(layer, proj)
            old = model.get_submodule(path)
            model.set_submodule(path, AutoBitLinear(old.in_features, old.out_features, bias=False, online_quant=True))
    state = {k: torch.from_numpy(v) for k, v in weights.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"lm_head.weight"}, (missing, unexpected)
    return model.requires_grad_(False)


# ----------------------------------------------------------------------------- layouts
ONEBIT_NAMES = {"self_attn.attn_sub_norm": "self_attn.inner_attn_ln", "mlp.ffn_sub_norm": "mlp.ffn_layernorm"}


def build_1bitllm(name: str, d: Dims, spm_model: Path) -> None:
    dest = OUT / name
    dest.mkdir(parents=True, exist_ok=True)
    n_tokens = spm_tokenizer(dest, spm_model)  # the SentencePiece pieces + <pad>
    n_vocab = n_tokens + (0 if d.tied else 1)  # the untied one has an extra row with no token: [PAD]
    rng = np.random.default_rng(SEED + sum(name.encode()))
    weights = random_float_weights(d, n_vocab, rng)
    # Linears as float16 (small files); the rest float32 as in the real (all-F32) checkpoints.
    # Embeddings and head hold float16-exact values (stored as float32): the converter writes them
    # as F16, as llama.cpp does, and the reference must not depend on that rounding.
    f16_exact = ("proj.weight", "_tokens.weight", "lm_head.weight")
    weights = {k: (v.astype(np.float16).astype(np.float32) if k.endswith(f16_exact) else v) for k, v in weights.items()}
    stored = {}
    for k, v in weights.items():
        for ms, ob in ONEBIT_NAMES.items():
            k = k.replace(ms, ob)
        stored[k] = v.astype(np.float16) if k.endswith("proj.weight") else v
    save(dest / "model.safetensors", stored)
    write_json(dest / "config.json", {
        "architectures": ["BitnetForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "hidden_size": d.n_embd, "intermediate_size": d.n_ff, "num_hidden_layers": d.n_layer,
        "num_attention_heads": d.n_head, "num_key_value_heads": d.n_head_kv, "vocab_size": n_vocab,
        "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": d.rope_theta,
        "rope_scaling": None, "tie_word_embeddings": d.tied, "bos_token_id": 1, "eos_token_id": 2,
        "pad_token_id": n_tokens - 1, "weight_bits": 1, "input_bits": 8,
        "torch_dtype": "float32",
    })
    model = online_bitnet_reference(weights, d, n_vocab, 1, 2)
    ref = reference(model, rng, 1, n_tokens - 1)
    np.savez_compressed(dest / "reference.npz", **ref)
    write_json(dest / "tokenizer_reference.json", spm_reference(dest))
    report(name, ref)


def build_microsoft_2b() -> None:
    """Packed uint8 + weight_scale from the official-layout fixture GGUF's own weights."""
    dest = OUT / "microsoft-2b"
    dest.mkdir(parents=True, exist_ok=True)
    src = ROOT / "tests" / "fixtures" / "bitnet-b1.58" / "model.gguf"
    gguf_to_hf = {"attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm",
                  "attn_sub_norm": "self_attn.attn_sub_norm", "ffn_sub_norm": "mlp.ffn_sub_norm",
                  "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
                  "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
                  "ffn_down": "mlp.down_proj"}
    tensors: dict[str, object] = {}
    with GGUFFile(src) as g:
        meta = g.metadata
        for name, info in g.tensors.items():
            if name == "token_embd.weight":
                tensors["model.embed_tokens.weight"] = g.dequantize(name).reshape(info.shape).astype(np.float16)
            elif name == "output_norm.weight":
                tensors["model.norm.weight"] = g.dequantize(name).astype(np.float32)
            else:
                _, layer, short, _ = name.split(".")
                hf = f"model.layers.{layer}.{gguf_to_hf[short]}"
                if info.ggml_type.name == "I2_S":
                    packed, scale = g.ternary(name)
                    values = unpack_i2s_codes(packed, info.n_elements).reshape(info.shape)
                    tensors[f"{hf}.weight"] = hf_pack(values)
                    tensors[f"{hf}.weight_scale"] = np.array([scale], dtype=np.float32)
                else:
                    tensors[f"{hf}.weight"] = g.dequantize(name).astype(np.float32)
    arch = "bitnet-b1.58"
    save(dest / "model.safetensors", tensors)
    write_json(dest / "config.json", {
        "architectures": ["BitNetForCausalLM"], "model_type": "bitnet", "hidden_act": "relu2",
        "hidden_size": meta[f"{arch}.embedding_length"], "intermediate_size": meta[f"{arch}.feed_forward_length"],
        "num_hidden_layers": meta[f"{arch}.block_count"], "num_attention_heads": meta[f"{arch}.attention.head_count"],
        "num_key_value_heads": meta[f"{arch}.attention.head_count_kv"], "vocab_size": meta[f"{arch}.vocab_size"],
        "max_position_embeddings": meta[f"{arch}.context_length"], "rms_norm_eps": 1e-5,
        "rope_theta": meta[f"{arch}.rope.freq_base"], "tie_word_embeddings": True,
        "bos_token_id": meta["tokenizer.ggml.bos_token_id"], "eos_token_id": meta["tokenizer.ggml.eos_token_id"],
        "torch_dtype": "float16",
        "quantization_config": {"quant_method": "bitnet", "linear_class": "autobitlinear",
                                "quantization_mode": "offline"},
    })
    llama3_small_tokenizer(dest)
    finish_loaded(dest, "microsoft-2b", meta["tokenizer.ggml.bos_token_id"])


def build_microsoft_bf16() -> None:
    dest = OUT / "microsoft-bf16"
    dest.mkdir(parents=True, exist_ok=True)
    d = Dims(128, 256, 2, 4, 2, 500000.0, True)
    n_vocab = VOCAB_LIMIT + 256
    rng = np.random.default_rng(SEED + 7)
    weights = {k: to_bf16(v) for k, v in random_float_weights(d, n_vocab, rng).items()}
    save(dest / "model.safetensors", {k: bf16_tensor(v) for k, v in weights.items()})
    write_json(dest / "config.json", {
        "architectures": ["BitNetForCausalLM"], "model_type": "bitnet", "hidden_act": "relu2",
        "hidden_size": d.n_embd, "intermediate_size": d.n_ff, "num_hidden_layers": d.n_layer,
        "num_attention_heads": d.n_head, "num_key_value_heads": d.n_head_kv, "vocab_size": n_vocab,
        "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": d.rope_theta,
        "tie_word_embeddings": True, "bos_token_id": VOCAB_LIMIT, "eos_token_id": VOCAB_LIMIT + 1,
        "torch_dtype": "bfloat16",
        "quantization_config": {"quant_method": "bitnet", "linear_class": "autobitlinear",
                                "quantization_mode": "online"},
    })
    llama3_small_tokenizer(dest)
    finish_loaded(dest, "microsoft-bf16", VOCAB_LIMIT, rng)


def build_llama() -> None:
    dest = OUT / "llama-1.58"
    dest.mkdir(parents=True, exist_ok=True)
    d = Dims(128, 384, 2, 4, 2, 500000.0, False)
    n_vocab = VOCAB_LIMIT + 256
    rng = np.random.default_rng(SEED + 11)
    raw = random_float_weights(d, n_vocab, rng)
    tensors: dict[str, object] = {}
    for k, v in raw.items():
        if "sub_norm" in k:
            continue  # plain Llama block
        module = k.removesuffix(".weight")
        if module.rsplit(".", 1)[-1] in LINEARS:
            values, scale = absmean(v)
            tensors[k] = hf_pack(values)
            # BitLinear divides by weight_scale: store the inverse scale (bf16, as HF1BitLLM does).
            tensors[f"{module}.weight_scale"] = bf16_tensor(to_bf16(np.array([1.0 / scale], dtype=np.float32)))
        else:
            tensors[k] = bf16_tensor(to_bf16(v))
    names = sorted(tensors)
    half = len(names) // 2
    shards = {"model-00001-of-00002.safetensors": names[:half], "model-00002-of-00002.safetensors": names[half:]}
    weight_map = {}
    for shard, keys in shards.items():
        save(dest / shard, {k: tensors[k] for k in keys})
        weight_map.update({k: shard for k in keys})
    write_json(dest / "model.safetensors.index.json", {"metadata": {}, "weight_map": weight_map})
    write_json(dest / "config.json", {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_act": "silu",
        "hidden_size": d.n_embd, "intermediate_size": d.n_ff, "num_hidden_layers": d.n_layer,
        "num_attention_heads": d.n_head, "num_key_value_heads": d.n_head_kv, "vocab_size": n_vocab,
        "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "rope_theta": d.rope_theta,
        "rope_scaling": None, "tie_word_embeddings": False, "attention_bias": False, "mlp_bias": False,
        "bos_token_id": VOCAB_LIMIT, "eos_token_id": VOCAB_LIMIT + 9, "torch_dtype": "bfloat16",
        "quantization_config": {"quant_method": "bitnet", "modules_to_not_convert": None},
    })
    llama3_small_tokenizer(dest, CHAT_TEMPLATE)
    finish_loaded(dest, "llama-1.58", VOCAB_LIMIT, rng)


def finish_loaded(dest: Path, name: str, bos: int, rng: np.random.Generator | None = None) -> None:
    model = load_folder(dest)
    assert model.config.vocab_size == VOCAB_LIMIT + 256
    ref = reference(model, rng or np.random.default_rng(SEED), bos, VOCAB_LIMIT)
    np.savez_compressed(dest / "reference.npz", **ref)
    write_json(dest / "tokenizer_reference.json", bpe_reference(dest))
    report(name, ref)


def report(name: str, ref: dict[str, np.ndarray]) -> None:
    lg = ref["logits"]
    print(f"{name}: logit range {lg.min():.2f}..{lg.max():.2f}, prompts {ref['tokens'][0][:8].tolist()}...")


BUILDERS = ("1bitllm", "1bitllm-ff320", "microsoft-2b", "microsoft-bf16", "llama-1.58")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help=f"fixtures to rebuild (default: all of {', '.join(BUILDERS)})")
    args = parser.parse_args(argv)
    unknown = set(args.names) - set(BUILDERS)
    if unknown:
        parser.error(f"unknown fixtures: {', '.join(sorted(unknown))}")
    names = args.names or list(BUILDERS)
    torch.manual_seed(SEED)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        spm_model = train_sentencepiece(Path(tmp)) if any(n.startswith("1bitllm") for n in names) else None
        for name in names:
            if name == "1bitllm":
                build_1bitllm(name, Dims(128, 256, 2, 4, 4, 10000.0, False), spm_model)
            elif name == "1bitllm-ff320":
                build_1bitllm(name, Dims(128, 320, 2, 4, 4, 10000.0, True), spm_model)
            elif name == "microsoft-2b":
                build_microsoft_2b()
            elif name == "microsoft-bf16":
                build_microsoft_bf16()
            else:
                build_llama()


if __name__ == "__main__":
    main()
