"""Build the reference fixtures in tests/fixtures/ from `transformers` (needs torch).

    python tools/make_fixtures.py            # rebuild every fixture
    python tools/make_fixtures.py llama      # rebuild only the named ones

For each architecture the engine runs, a tiny random checkpoint is built as the real model class
of `transformers` (BitNetForCausalLM / LlamaForCausalLM) whose linear layers are transformers'
own W1.58A8 `AutoBitLinear` in "offline" mode: per token ``x_q = round(x * s) / s`` with
``s = 127 / max|x|`` (clamped to [-128, 127]), then ``y = (x_q @ T.T) * w_scale`` with T ternary.
The same T and w_scale are written to a GGUF in the official layout, and the script asserts,
by reading the file back, that every weight in it equals the reference model's effective weight.

Outputs per fixture, in tests/fixtures/<name>/: model.gguf, reference.npz (see README.md there).
Deterministic: fixed seeds, eager attention, torch.compile disabled, one thread.
"""

from __future__ import annotations

import os

# transformers decorates the BitLinear quantizers with torch.compile; run them eagerly so the
# reference is exactly the Python arithmetic (and needs no C compiler).
os.environ.setdefault("TORCH_COMPILE_DISABLE", "1")

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
sys.path.insert(0, str(ROOT / "src"))

from transformers import BitNetConfig, BitNetForCausalLM, LlamaConfig, LlamaForCausalLM  # noqa: E402
from transformers.integrations.bitnet import ActQuant, AutoBitLinear  # noqa: E402

from neuro_bitnet.engine.gguf import GGMLType, GGUFFile, GGUFValueType  # noqa: E402
from neuro_bitnet.engine.gguf_writer import GGUFWriter  # noqa: E402
from neuro_bitnet.engine.tokenizer import (  # noqa: E402
    gguf_metadata_from_hf_tokenizer,
    llama3_tokenizer_json,
)

SEED = 1234
VOCAB_LIMIT = 320  # + the 256 Llama-3 special tokens: 576 in all
PROMPT_LENGTHS = (8, 16, 40)
N_GREEDY = 16
# Float noise can flip one int8 activation rounding (and the flip cascades), which moved logits by 0.17
# (~1% of their range) in the numpy re-implementation: greedy steps must win by more.
MIN_GREEDY_MARGIN = 0.3
MIN_DISTINCT_GREEDY = 4  # a continuation that only repeats one token would hide KV-cache bugs
MAX_PROMPT_DRAWS = 2000
ROPE_STYLE_KEY = "neuro_bitnet.rope_style"
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Spec:
    """One fixture: a tiny model of one architecture."""

    name: str
    arch: str  # GGUF general.architecture
    hidden_act: str  # "relu2" or "silu"
    sub_norms: bool  # BitNet block (attn_sub_norm, ffn_sub_norm) or plain Llama block
    n_embd: int
    n_ff: int
    n_layer: int
    n_head: int
    n_head_kv: int
    tied: bool
    rope_theta: float
    n_ctx: int = 256
    rms_eps: float = 1e-5
    also_tq2_0: bool = False

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def rope_style(self) -> str:
        """RoPE pairing the GGUF expects: the llama converter permutes Q/K rows for "normal"."""
        return "normal" if self.arch == "llama" else "neox"


SPECS: tuple[Spec, ...] = (
    # Microsoft BitNet b1.58 2B-4T: relu2, sub-norms, GQA, tied head, theta 500000.
    # n_embd and n_ff are multiples of 256 so the same weights also fit TQ2_0 rows.
    Spec("bitnet-b1.58", "bitnet-b1.58", "relu2", True, 256, 512, 2, 4, 2, True, 500000.0, also_tq2_0=True),
    # 1bitLLM bitnet_b1_58-large/3B: same block with SiLU, no GQA, theta 10000, tied head
    # (llama.cpp's "bitnet" graph uses token_embd as the output matrix).
    Spec("bitnet", "bitnet", "silu", True, 128, 384, 2, 4, 4, True, 10000.0),
    # Like bitnet_b1_58-3B's n_ff 8640: ffn_down rows are not a multiple of 128 weights.
    Spec("bitnet-ff320", "bitnet", "silu", True, 128, 320, 2, 4, 4, True, 10000.0),
    # HF1BitLLM Llama3-8B-1.58: plain Llama block, every linear but lm_head ternary, GQA, untied.
    Spec("llama", "llama", "silu", False, 128, 384, 2, 4, 2, False, 500000.0),
)


# ----------------------------------------------------------------------------- weights
def f16_exact(a: np.ndarray) -> np.ndarray:
    """``a`` rounded to float16 values (kept as float32): what an F16 tensor in the file holds."""
    return a.astype(np.float16).astype(np.float32)


def ternarize(w: np.ndarray) -> tuple[np.ndarray, float]:
    """Absmean quantization as BitNet trains: T = clamp(round(W / mean|W|), -1, 1), scale mean|W|.

    The scale is rounded to a float16 value so that the TQ2_0 copy (fp16 block scales) holds
    exactly the same weights as the I2_S file (f32 scale).
    """
    scale = float(np.float16(np.abs(w).mean()))
    ternary = np.clip(np.round(w / scale), -1, 1).astype(np.int8)
    return ternary, scale


@dataclass
class Weights:
    """All weights of one fixture, in `transformers` parameter names (numpy, float32)."""

    dense: dict[str, np.ndarray]  # embeddings, head, norms
    ternary: dict[str, tuple[np.ndarray, float]]  # module path of each linear -> (T, scale)


def make_weights(spec: Spec, n_vocab: int, rng: np.random.Generator) -> Weights:
    """Random weights drawn so activations stay O(1) and attention is neither flat nor one-hot."""
    d, ff, hd = spec.n_embd, spec.n_ff, spec.head_dim
    dense: dict[str, np.ndarray] = {}
    ternary: dict[str, tuple[np.ndarray, float]] = {}

    def norm(n: int) -> np.ndarray:
        return rng.uniform(0.8, 1.2, n).astype(np.float32)

    # Logit spread ~ 2.5: embeddings (F16 in the file, so F16-exact here too).
    dense["model.embed_tokens.weight"] = f16_exact(rng.normal(0, 2.5 / np.sqrt(d), (n_vocab, d)))
    if not spec.tied:
        dense["lm_head.weight"] = f16_exact(rng.normal(0, 2.5 / np.sqrt(d), (n_vocab, d)))
    dense["model.norm.weight"] = norm(d)
    shapes = {
        "q_proj": (spec.n_head * hd, d),
        "k_proj": (spec.n_head_kv * hd, d),
        "v_proj": (spec.n_head_kv * hd, d),
        "o_proj": (d, spec.n_head * hd),
        "gate_proj": (ff, d),
        "up_proj": (ff, d),
        "down_proj": (d, ff),
    }
    for layer in range(spec.n_layer):
        prefix = f"model.layers.{layer}"
        dense[f"{prefix}.input_layernorm.weight"] = norm(d)
        dense[f"{prefix}.post_attention_layernorm.weight"] = norm(d)
        if spec.sub_norms:
            dense[f"{prefix}.self_attn.attn_sub_norm.weight"] = norm(spec.n_head * hd)
            dense[f"{prefix}.mlp.ffn_sub_norm.weight"] = norm(ff)
        for proj, (rows, cols) in shapes.items():
            gain = 1.5 if proj in ("q_proj", "k_proj") else 1.0
            gain *= rng.uniform(0.7, 1.4)  # a different scale per tensor
            w = rng.normal(0, gain / np.sqrt(cols), (rows, cols))
            module = "self_attn" if proj in LINEARS[:4] else "mlp"
            ternary[f"{prefix}.{module}.{proj}"] = ternarize(w)
    return Weights(dense, ternary)


# ----------------------------------------------------------------------------- reference model
def hf_config(spec: Spec, n_vocab: int, bos: int, eos: int):
    """The `transformers` config of a fixture."""
    common = dict(
        vocab_size=n_vocab,
        hidden_size=spec.n_embd,
        intermediate_size=spec.n_ff,
        num_hidden_layers=spec.n_layer,
        num_attention_heads=spec.n_head,
        num_key_value_heads=spec.n_head_kv,
        hidden_act=spec.hidden_act,
        max_position_embeddings=spec.n_ctx,
        rms_norm_eps=spec.rms_eps,
        rope_parameters={"rope_type": "default", "rope_theta": spec.rope_theta},
        tie_word_embeddings=spec.tied,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=None,
    )
    if spec.sub_norms:
        return BitNetConfig(**common)
    return LlamaConfig(**common, head_dim=spec.head_dim)


def build_reference(spec: Spec, weights: Weights, config) -> nn.Module:
    """The transformers model with AutoBitLinear (offline W1.58A8) layers holding ``weights``."""
    model_cls = BitNetForCausalLM if spec.sub_norms else LlamaForCausalLM
    config._attn_implementation = "eager"
    model = model_cls(config).eval()
    for path, (tern, scale) in weights.ternary.items():
        old = model.get_submodule(path)
        new = AutoBitLinear(old.in_features, old.out_features, bias=False, online_quant=False)
        with torch.no_grad():
            new.weight.copy_(torch.from_numpy(tern.astype(np.float32)))
            new.weight_scale.fill_(scale)
        new.requires_grad_(False)
        model.set_submodule(path, new)
    state = {k: torch.from_numpy(v) for k, v in weights.dense.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected, unexpected
    expected_missing = {f"{p}.weight" for p in weights.ternary} | {f"{p}.weight_scale" for p in weights.ternary}
    if spec.tied:
        expected_missing.add("lm_head.weight")
    assert set(missing) <= expected_missing, set(missing) - expected_missing
    if spec.tied:
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(), "head not tied"
    model.requires_grad_(False)
    check_reference_layers(model, weights)
    return model


def check_reference_layers(model: nn.Module, weights: Weights) -> None:
    """Assert each ternary layer computes round-to-int8 activations times T * scale, nothing else."""
    gen = torch.Generator().manual_seed(0)
    for path, (tern, scale) in weights.ternary.items():
        layer = model.get_submodule(path)
        assert isinstance(layer, AutoBitLinear) and not layer.online_quant
        w_eff = (layer.weight * layer.weight_scale).numpy()
        assert np.array_equal(w_eff, tern.astype(np.float32) * np.float32(scale)), path
        x = torch.randn(5, layer.in_features, generator=gen)
        s = 127.0 / x.abs().amax(-1, keepdim=True)
        x_q = (x * s).round().clamp(-128, 127) / s
        assert torch.equal(ActQuant.apply(x), x_q)
        want = x_q.double() @ torch.from_numpy(tern.astype(np.float64)).T * scale
        assert torch.allclose(layer(x).double(), want, rtol=1e-5, atol=1e-5), path


@torch.no_grad()
def run_prompt(model: nn.Module, prompt: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(logits at every prompt position, greedy continuation, top-1 minus top-2 logit per step).

    None when the prompt makes a poor fixture: a greedy step that wins by less than
    MIN_GREEDY_MARGIN (float noise elsewhere could flip it) or a continuation of fewer than
    MIN_DISTINCT_GREEDY different tokens. The greedy loop recomputes the whole sequence each step;
    transformers' own KV-cache ``generate`` must then produce the same tokens.
    """
    logits = model(torch.tensor([prompt])).logits[0].numpy()
    seq, greedy, margin = list(prompt), [], []
    for step in range(N_GREEDY):
        last = model(torch.tensor([seq])).logits[0, -1].numpy()
        if step == 0:
            assert np.array_equal(last, logits[-1])
        top2 = np.sort(last)[-2:]
        if top2[1] - top2[0] < MIN_GREEDY_MARGIN:
            return None
        greedy.append(int(np.argmax(last)))
        margin.append(top2[1] - top2[0])
        seq.append(greedy[-1])
    if len(set(greedy)) < MIN_DISTINCT_GREEDY:
        return None
    out = model.generate(
        torch.tensor([prompt]),
        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        do_sample=False,
        max_new_tokens=N_GREEDY,
        min_new_tokens=N_GREEDY,
        eos_token_id=None,
        pad_token_id=0,
    )
    assert out[0, len(prompt) :].tolist() == greedy, (prompt, out, greedy)
    return logits, np.array(greedy, dtype=np.int32), np.array(margin, dtype=np.float32)


def reference_outputs(model: nn.Module, rng: np.random.Generator, bos: int, n_vocab: int) -> dict[str, np.ndarray]:
    """One prompt per length in PROMPT_LENGTHS (BOS, then random regular tokens) and its outputs.

    Prompts are redrawn until :func:`run_prompt` accepts them.
    """
    n_prompts, max_len = len(PROMPT_LENGTHS), max(PROMPT_LENGTHS)
    ref = {
        "tokens": np.full((n_prompts, max_len), -1, dtype=np.int32),
        "lengths": np.array(PROMPT_LENGTHS, dtype=np.int32),
        "logits": np.zeros((n_prompts, max_len, n_vocab), dtype=np.float32),
        "greedy": np.zeros((n_prompts, N_GREEDY), dtype=np.int32),
        "greedy_margin": np.zeros((n_prompts, N_GREEDY), dtype=np.float32),
    }
    for i, length in enumerate(PROMPT_LENGTHS):
        for _ in range(MAX_PROMPT_DRAWS):
            prompt = [bos] + rng.integers(0, VOCAB_LIMIT, length - 1).tolist()
            result = run_prompt(model, prompt)
            if result is not None:
                break
        else:
            raise RuntimeError(f"found no suitable prompt of length {length} in {MAX_PROMPT_DRAWS} draws")
        ref["tokens"][i, :length] = prompt
        ref["logits"][i, :length], ref["greedy"][i], ref["greedy_margin"][i] = result
    return ref


# ----------------------------------------------------------------------------- GGUF
def permute_for_interleaved_rope(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's converter permutation: rotate-half rows -> interleaved-pair rows, per head."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


GGUF_BLOCK_NAMES = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.attn_sub_norm": "attn_sub_norm",
    "mlp.ffn_sub_norm": "ffn_sub_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}


def gguf_name(hf_name: str) -> str:
    """llama.cpp tensor name of a transformers parameter or module path."""
    fixed = {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight",
    }
    if hf_name in fixed:
        return fixed[hf_name]
    _, _, layer, rest = hf_name.split(".", 3)
    rest = rest.removesuffix(".weight")
    return f"blk.{layer}.{GGUF_BLOCK_NAMES[rest]}.weight"


def gguf_tensors(spec: Spec, weights: Weights) -> tuple[dict[str, np.ndarray], dict[str, tuple[np.ndarray, float]]]:
    """Float tensors and ternary tensors under their GGUF names, Q/K permuted where the arch wants."""
    dense = {gguf_name(k): v for k, v in weights.dense.items()}
    ternary = {}
    for path, (tern, scale) in weights.ternary.items():
        if spec.rope_style == "normal" and path.endswith(("q_proj", "k_proj")):
            heads = spec.n_head if path.endswith("q_proj") else spec.n_head_kv
            tern = permute_for_interleaved_rope(tern, heads)
        ternary[gguf_name(path)] = (tern, scale)
    return dense, ternary


def write_gguf(
    path: Path,
    spec: Spec,
    weights: Weights,
    tokenizer_meta: dict,
    n_vocab: int,
    ternary_type: GGMLType,
) -> None:
    """Write the fixture in the official layout: F16 embeddings/head, F32 norms, ternary linears."""
    arch = spec.arch
    writer = GGUFWriter(path, arch)
    writer.add("general.name", f"neuro-bitnet fixture {spec.name}")
    for key, value in (
        ("vocab_size", n_vocab),
        ("context_length", spec.n_ctx),
        ("embedding_length", spec.n_embd),
        ("block_count", spec.n_layer),
        ("feed_forward_length", spec.n_ff),
        ("rope.dimension_count", spec.head_dim),
        ("attention.head_count", spec.n_head),
        ("attention.head_count_kv", spec.n_head_kv),
    ):
        writer.add(f"{arch}.{key}", value, GGUFValueType.UINT32)
    writer.add(f"{arch}.attention.layer_norm_rms_epsilon", spec.rms_eps, GGUFValueType.FLOAT32)
    writer.add(f"{arch}.rope.freq_base", spec.rope_theta, GGUFValueType.FLOAT32)
    writer.add(ROPE_STYLE_KEY, spec.rope_style)
    for key, value in tokenizer_meta.items():
        writer.add(key, value)

    dense, ternary = gguf_tensors(spec, weights)
    for name in ordered_names(spec, dense, ternary):
        if name in ternary:
            tern, scale = ternary[name]
            writer.add_ternary(name, tern, scale, ggml_type=ternary_type)
        elif name in ("token_embd.weight", "output.weight"):
            writer.add_tensor(name, dense[name].astype(np.float16), GGMLType.F16)
        else:
            writer.add_tensor(name, dense[name], GGMLType.F32)
    writer.write()
    check_gguf(path, dense, ternary, ternary_type)


def ordered_names(spec: Spec, dense: dict, ternary: dict) -> list[str]:
    """Tensor order of llama.cpp's converters: embeddings, blocks in order, output norm, head."""
    order = ["token_embd.weight"]
    per_block = ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_sub_norm", "attn_output",
                 "ffn_norm", "ffn_gate", "ffn_up", "ffn_sub_norm", "ffn_down")
    for layer in range(spec.n_layer):
        order += [f"blk.{layer}.{t}.weight" for t in per_block]
    order += ["output_norm.weight", "output.weight"]
    names = [n for n in order if n in dense or n in ternary]
    assert len(names) == len(dense) + len(ternary)
    return names


def check_gguf(path: Path, dense: dict, ternary: dict, ternary_type: GGMLType) -> None:
    """Read the file back: every tensor must equal the reference model's effective weight."""
    with GGUFFile(path) as gguf:
        assert set(gguf.tensors) == set(dense) | set(ternary)
        for name, value in dense.items():
            assert np.array_equal(gguf.dequantize(name), value), name
        for name, (tern, scale) in ternary.items():
            info = gguf.info(name)
            assert info.ggml_type == ternary_type and info.shape == tern.shape, name
            assert np.array_equal(gguf.dequantize(name), tern.astype(np.float32) * np.float32(scale)), name


# ----------------------------------------------------------------------------- main
def tokenizer_metadata() -> tuple[dict, int, int, int]:
    """Tiny real Llama-3 BPE vocabulary: (GGUF tokenizer keys, n_vocab, bos id, eos id)."""
    meta = gguf_metadata_from_hf_tokenizer(llama3_tokenizer_json(), vocab_limit=VOCAB_LIMIT)
    n_vocab = len(meta["tokenizer.ggml.tokens"])
    return meta, n_vocab, int(meta["tokenizer.ggml.bos_token_id"]), int(meta["tokenizer.ggml.eos_token_id"])


def build_fixture(spec: Spec, tokenizer: tuple[dict, int, int, int]) -> None:
    """Build one fixture directory."""
    meta, n_vocab, bos, eos = tokenizer
    seed = SEED + sum(spec.name.encode())
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    weights = make_weights(spec, n_vocab, rng)
    model = build_reference(spec, weights, hf_config(spec, n_vocab, bos, eos))
    ref = reference_outputs(model, rng, bos, n_vocab)

    out = FIXTURES / spec.name
    out.mkdir(parents=True, exist_ok=True)
    write_gguf(out / "model.gguf", spec, weights, meta, n_vocab, GGMLType.I2_S)
    if spec.also_tq2_0:
        write_gguf(out / "model-tq2_0.gguf", spec, weights, meta, n_vocab, GGMLType.TQ2_0)
    np.savez_compressed(out / "reference.npz", **ref)
    print(
        f"{spec.name}: vocab {n_vocab}, logit range {ref['logits'].min():.2f}..{ref['logits'].max():.2f}, "
        f"min greedy margin {ref['greedy_margin'].min():.4f}, greedy {ref['greedy'][0].tolist()}"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="fixtures to rebuild (default: all)")
    args = parser.parse_args(argv)
    unknown = set(args.names) - {s.name for s in SPECS}
    if unknown:
        parser.error(f"unknown fixtures: {', '.join(sorted(unknown))}")
    torch.set_num_threads(1)
    tokenizer = tokenizer_metadata()
    for spec in SPECS:
        if not args.names or spec.name in args.names:
            build_fixture(spec, tokenizer)


if __name__ == "__main__":
    main()
