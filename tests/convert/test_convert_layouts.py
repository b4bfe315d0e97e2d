"""The converter on tiny checkpoints of every layout (tests/fixtures/hf, made by
tools/make_hf_checkpoints.py with transformers): exact weights, engine logits, tokenizers."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from neuro_bitnet.engine import load_model
from neuro_bitnet.engine.gguf import GGMLType, GGUFFile
from neuro_bitnet.engine.tokenizer import TOKEN_CONTROL, TOKEN_UNUSED, Tokenizer
from neuro_bitnet.models.convert import convert_checkpoint

from support.numpy_forward import NumpyModel

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
HF = FIXTURES / "hf"
LAYOUTS = {
    "1bitllm": ("1bitllm", "bitnet"),
    "1bitllm-ff320": ("1bitllm", "bitnet"),
    "microsoft-2b": ("microsoft", "bitnet-b1.58"),
    "microsoft-bf16": ("microsoft", "bitnet-b1.58"),
    "llama-1.58": ("llama", "llama"),
}
ENGINE_TOL = 0.01  # of the reference logit range (the engine's tolerance)
EXACT_TOL = 1e-4  # of the range: the converted weights must be the reference's, bit for bit


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("converted")
    return {name: convert_checkpoint(HF / name, out / f"{name}.gguf").path for name in LAYOUTS}


def _prompts(name: str):
    ref = np.load(HF / name / "reference.npz")
    for i, n in enumerate(ref["lengths"]):
        yield ref["tokens"][i, :n], ref["logits"][i, :n]


@pytest.mark.parametrize("name", LAYOUTS)
def test_layout_detected(converted: dict[str, Path], name: str) -> None:
    source, arch = LAYOUTS[name]
    with GGUFFile(converted[name]) as g:
        assert g.metadata["general.architecture"] == arch
        assert g.metadata["neuro_bitnet.converted_from"] == source
        assert g.metadata["neuro_bitnet.rope_style"] == ("normal" if arch == "llama" else "neox")
        for tname, info in g.tensors.items():
            short = tname.split(".")[-2]
            if short.startswith(("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")):
                assert info.ggml_type == GGMLType.I2_S, tname
            elif "norm" in short:
                assert info.ggml_type == GGMLType.F32, tname


@pytest.mark.parametrize("name", LAYOUTS)
def test_converted_weights_are_exact(converted: dict[str, Path], name: str) -> None:
    """A plain numpy forward over the converted file reproduces transformers' logits to float noise."""
    model = NumpyModel.from_gguf(converted[name])
    for tokens, ref in _prompts(name):
        got = model.logits(tokens)
        assert np.abs(got - ref).max() <= EXACT_TOL * (ref.max() - ref.min())


@pytest.mark.parametrize("name", LAYOUTS)
def test_engine_matches_reference(converted: dict[str, Path], name: str) -> None:
    model = load_model(converted[name], threads=2, ctx_size=64, head="exact")
    with model:
        for tokens, ref in _prompts(name):
            got = model.logits(tokens.tolist())
            assert np.array_equal(got.argmax(-1), ref.argmax(-1))
            assert np.abs(got - ref).max() <= ENGINE_TOL * (ref.max() - ref.min())


@pytest.mark.parametrize("name", LAYOUTS)
def test_tokenizer_matches_reference(converted: dict[str, Path], name: str) -> None:
    """The GGUF tokenizer encodes like sentencepiece / tokenizers did on the original files."""
    with GGUFFile(converted[name]) as g:
        tok = Tokenizer.from_gguf_metadata(g.metadata)
    probes = json.loads((HF / name / "tokenizer_reference.json").read_text(encoding="utf-8"))
    for text, ids in probes.items():
        assert tok.encode(text, add_bos=False) == ids, text


def test_microsoft_packed_equals_official_layout(converted: dict[str, Path]) -> None:
    """The tiny 2B-style checkpoint was packed from the official-layout fixture's weights: the
    conversion gives back every tensor byte for byte, and the same tokenizer."""
    with GGUFFile(converted["microsoft-2b"]) as ours, GGUFFile(FIXTURES / "bitnet-b1.58" / "model.gguf") as ref:
        assert set(ours.tensors) == set(ref.tensors)
        for name, info in ref.tensors.items():
            mine = ours.info(name)
            assert (mine.shape, mine.ggml_type) == (info.shape, info.ggml_type), name
            assert bytes(ours.raw(name)) == bytes(ref.raw(name)), name
        for key, value in ref.metadata.items():
            if key.startswith(("tokenizer.", "bitnet-b1.58.")):
                assert ours.metadata[key] == value, key


def test_spm_vocab_padding_and_specials(converted: dict[str, Path]) -> None:
    """1bitLLM: config vocab_size beyond the SentencePiece pieces, an added <pad> (control),
    [PADn] for rows with no token; untied head kept as output.weight."""
    with GGUFFile(converted["1bitllm"]) as g:
        meta = g.metadata
        tokens, types = meta["tokenizer.ggml.tokens"], meta["tokenizer.ggml.token_type"]
        assert len(tokens) == g.info("token_embd.weight").shape[0] == meta["bitnet.vocab_size"]
        assert tokens[-2] == "<pad>" and types[-2] == TOKEN_CONTROL
        assert tokens[-1] == f"[PAD{len(tokens) - 1}]" and types[-1] == TOKEN_UNUSED
        assert meta["tokenizer.ggml.model"] == "llama"
        assert (meta["tokenizer.ggml.bos_token_id"], meta["tokenizer.ggml.eos_token_id"]) == (1, 2)
        assert meta["tokenizer.ggml.padding_token_id"] == len(tokens) - 2
        assert "output.weight" in g.tensors
    with GGUFFile(converted["1bitllm-ff320"]) as g:
        assert "output.weight" not in g.tensors  # tied
        assert g.info("blk.0.ffn_down.weight").shape == (128, 320)


def test_llama_keeps_chat_template_and_bf16(converted: dict[str, Path]) -> None:
    with GGUFFile(converted["llama-1.58"]) as g:
        meta = g.metadata
        assert "<|start_header_id|>" in meta["tokenizer.chat_template"]
        assert meta["tokenizer.ggml.tokens"][meta["tokenizer.ggml.eos_token_id"]] == "<|eot_id|>"
        assert g.info("token_embd.weight").ggml_type == GGMLType.BF16  # bf16 kept, not rounded
        assert g.info("output.weight").ggml_type == GGMLType.BF16


def test_arch_override(tmp_path: Path) -> None:
    out = convert_checkpoint(HF / "microsoft-bf16", tmp_path / "m.gguf", arch="bitnet").path
    with GGUFFile(out) as g:
        assert g.metadata["general.architecture"] == "bitnet"
        assert g.metadata["bitnet.feed_forward_length"] == 256
