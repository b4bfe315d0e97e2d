"""The synthetic BitNet b1.58 model: official layout, realistic random weights, caching.

Most tests use the "tiny" shapes. The 2B file (1.2 GB, a minute or more to write) is built once
into ~/.cache/neuro-bitnet/test-models and reused: its size must be the official file's, and
chat on it must render the trained BitNet format.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import struct
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from neuro_bitnet.engine import load_model
from neuro_bitnet.engine.chat_format import MICROSOFT_PLACEHOLDER_TEMPLATE
from neuro_bitnet.engine.gguf import GGMLType, GGUFFile
from neuro_bitnet.engine.quants import tq2_0_to_ternary, unpack_i2s_codes
from neuro_bitnet.engine.synthetic import (
    ARCH,
    OFFICIAL_2B_FILE_SIZE,
    SYNTHETIC_SHAPES,
    build_synthetic_model,
    file_size,
    header_size,
    synthetic_model_path,
)
from neuro_bitnet.errors import ConfigError, NeuroError

TINY = SYNTHETIC_SHAPES["tiny"]
S, U32, I32, F32, BOOL, ARR = "string", "uint32", "int32", "float32", "bool", "array"
# The official ggml-model-i2_s.gguf's keys in file order with their types (arrays: element type),
# from public loader dumps (docs: shared reference "The official 2B file, exactly").
OFFICIAL_KEYS = [
    ("general.architecture", S), ("general.name", S),
    *[(f"{ARCH}.{k}", U32) for k in (
        "vocab_size", "context_length", "embedding_length", "block_count", "feed_forward_length",
        "rope.dimension_count", "attention.head_count", "attention.head_count_kv")],
    ("tokenizer.ggml.add_bos_token", BOOL),
    (f"{ARCH}.attention.layer_norm_rms_epsilon", F32), (f"{ARCH}.rope.freq_base", F32),
    ("general.file_type", U32), ("tokenizer.ggml.model", S),
    ("tokenizer.ggml.tokens", (ARR, S)), ("tokenizer.ggml.scores", (ARR, F32)),
    ("tokenizer.ggml.token_type", (ARR, I32)), ("tokenizer.ggml.merges", (ARR, S)),
    ("tokenizer.ggml.bos_token_id", U32), ("tokenizer.ggml.eos_token_id", U32),
    ("tokenizer.ggml.padding_token_id", U32), ("tokenizer.chat_template", S),
    ("general.quantization_version", U32),
]
_TYPE_NAMES = {4: U32, 5: I32, 6: F32, 7: BOOL, 8: S, 9: ARR}
_SIZES = {4: 4, 5: 4, 6: 4, 7: 1}
CHAT = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": " Hi there "}]
TRAINED_PROMPT = "<|begin_of_text|>System: Be brief.<|eot_id|>User: Hi there<|eot_id|>Assistant: "


def _key_layout(path: Path) -> list[tuple[str, object]]:
    """(key, type) of every metadata key in file order, read with struct alone."""
    data = path.read_bytes()[: 16 << 20]
    pos = 24
    n_kv = struct.unpack_from("<Q", data, 16)[0]

    def string() -> str:
        nonlocal pos
        n = struct.unpack_from("<Q", data, pos)[0]
        pos += 8 + n
        return data[pos - n : pos].decode()

    layout = []
    for _ in range(n_kv):
        key = string()
        vtype = struct.unpack_from("<I", data, pos)[0]
        pos += 4
        if vtype == 8:
            string()
            layout.append((key, S))
        elif vtype == 9:
            etype, count = struct.unpack_from("<IQ", data, pos)
            pos += 12
            for _ in range(count):
                if etype == 8:
                    string()
                else:
                    pos += _SIZES[etype]
            layout.append((key, (ARR, _TYPE_NAMES[etype])))
        else:
            pos += _SIZES[vtype]
            layout.append((key, _TYPE_NAMES[vtype]))
    return layout


def _test_models_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "neuro-bitnet" / "test-models"
PROJECTIONS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
NORMS = ("attn_norm", "attn_sub_norm", "ffn_norm", "ffn_sub_norm")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_synthetic_model("tiny", tmp_path_factory.mktemp("synthetic") / "tiny.gguf")


def test_2b_shapes_are_the_official_model() -> None:
    s = SYNTHETIC_SHAPES["2b"]
    assert (s["n_vocab"], s["n_embd"], s["n_ff"], s["n_layer"]) == (128256, 2560, 6912, 30)
    assert (s["n_head"], s["n_head_kv"], s["ctx"]) == (20, 5, 4096)
    assert (s["rope_theta"], s["rms_eps"]) == (500000.0, 1e-5)


@pytest.mark.slow
def test_2b_header_is_the_official_size() -> None:
    """Computed from the key list and the tensor table alone (no tensor data generated)."""
    assert header_size("2b") == 8_351_360
    assert file_size("2b") == OFFICIAL_2B_FILE_SIZE == 1_187_801_280


def test_header_mirrors_the_official_keys_in_order(tiny: Path) -> None:
    assert _key_layout(tiny) == OFFICIAL_KEYS
    with GGUFFile(tiny) as f:
        meta = f.metadata
    assert "tokenizer.ggml.pre" not in meta and "tokenizer.ggml.add_eos_token" not in meta
    assert meta["general.name"] == "bitnet2b-tiny"
    assert meta["tokenizer.ggml.padding_token_id"] == meta["tokenizer.ggml.eos_token_id"]
    n_regular = TINY["n_vocab"] - 256
    assert set(meta["tokenizer.ggml.scores"][:n_regular]) == {0.0}
    assert set(meta["tokenizer.ggml.scores"][n_regular:]) == {-1000.0}
    assert meta["general.quantization_version"] == 2


def test_chat_on_the_placeholder_template_is_the_trained_format(tiny: Path) -> None:
    model = load_model(tiny, threads=1, ctx_size=64)
    try:
        assert model.render_chat(CHAT) == TRAINED_PROMPT
        ids = model.chat_prompt_ids(CHAT)
        eot = model.tokenizer.tokens.index("<|eot_id|>")
        assert ids[0] == model.tokenizer.bos_id and ids.count(model.tokenizer.bos_id) == 1
        assert ids.count(eot) == 2 and model.tokenizer.eos_id not in ids
        assert {eot, model.tokenizer.eos_id} <= model.tokenizer.stop_ids
        assert model.chat_prompt.format.name == "bitnet"
    finally:
        model.close()


@pytest.fixture(scope="module")
def official_2b() -> Path:
    return synthetic_model_path("2b", _test_models_dir())


@pytest.mark.slow
def test_2b_file_is_the_official_size_and_chats_in_the_trained_format(official_2b: Path) -> None:
    assert official_2b.stat().st_size == OFFICIAL_2B_FILE_SIZE
    assert _key_layout(official_2b) == OFFICIAL_KEYS
    with GGUFFile(official_2b) as f:
        meta = f.metadata
        assert len(f.tensors) == 332
    assert meta["general.name"] == "bitnet2b"
    assert meta["tokenizer.chat_template"] == MICROSOFT_PLACEHOLDER_TEMPLATE
    assert len(MICROSOFT_PLACEHOLDER_TEMPLATE) == 282
    assert len(meta["tokenizer.ggml.merges"]) == 280_147
    model = load_model(official_2b, threads=2, ctx_size=64)
    try:
        assert model.render_chat(CHAT) == TRAINED_PROMPT
        answer = model.chat(CHAT, max_tokens=2, temperature=0)
        list(answer)
        assert answer.result.prompt_tokens == len(model.chat_prompt_ids(CHAT))
    finally:
        model.close()


def test_metadata_has_the_official_keys(tiny: Path) -> None:
    with GGUFFile(tiny) as f:
        meta = f.metadata
    p = ARCH + "."
    assert meta["general.architecture"] == ARCH
    assert meta["general.file_type"] == 40
    n_embd, n_head = TINY["n_embd"], TINY["n_head"]
    assert meta[p + "vocab_size"] == TINY["n_vocab"]
    assert meta[p + "context_length"] == TINY["ctx"]
    assert meta[p + "embedding_length"] == n_embd
    assert meta[p + "block_count"] == TINY["n_layer"]
    assert meta[p + "feed_forward_length"] == TINY["n_ff"]
    assert meta[p + "rope.dimension_count"] == n_embd // n_head
    assert meta[p + "attention.head_count"] == n_head
    assert meta[p + "attention.head_count_kv"] == TINY["n_head_kv"]
    assert meta[p + "attention.layer_norm_rms_epsilon"] == pytest.approx(TINY["rms_eps"])
    assert meta[p + "rope.freq_base"] == pytest.approx(TINY["rope_theta"])
    assert meta["tokenizer.ggml.model"] == "gpt2"
    assert len(meta["tokenizer.ggml.tokens"]) == TINY["n_vocab"]
    assert meta["tokenizer.ggml.tokens"][meta["tokenizer.ggml.bos_token_id"]] == "<|begin_of_text|>"
    assert "<|eot_id|>" in meta["tokenizer.ggml.tokens"]
    assert meta["tokenizer.chat_template"] == MICROSOFT_PLACEHOLDER_TEMPLATE


def test_tensors_have_the_official_names_types_and_shapes(tiny: Path) -> None:
    n_embd, n_ff = TINY["n_embd"], TINY["n_ff"]
    n_kv = TINY["n_head_kv"] * n_embd // TINY["n_head"]
    with GGUFFile(tiny) as f:
        tensors = f.tensors
    assert len(tensors) == 2 + 11 * TINY["n_layer"]
    assert tensors["token_embd.weight"].ggml_type == GGMLType.F16
    assert tensors["token_embd.weight"].shape == (TINY["n_vocab"], n_embd)
    assert tensors["output_norm.weight"].ggml_type == GGMLType.F32
    assert "output.weight" not in tensors  # tied embeddings
    expected = {
        "attn_q": (n_embd, n_embd), "attn_k": (n_kv, n_embd), "attn_v": (n_kv, n_embd),
        "attn_output": (n_embd, n_embd), "ffn_gate": (n_ff, n_embd), "ffn_up": (n_ff, n_embd),
        "ffn_down": (n_embd, n_ff),
        "attn_norm": (n_embd,), "attn_sub_norm": (n_embd,), "ffn_norm": (n_embd,), "ffn_sub_norm": (n_ff,),
    }
    for i in range(TINY["n_layer"]):
        for kind, shape in expected.items():
            info = tensors[f"blk.{i}.{kind}.weight"]
            assert info.shape == shape, info.name
            assert info.ggml_type == (GGMLType.I2_S if kind in PROJECTIONS else GGMLType.F32), info.name


def test_ternary_weights_are_realistic(tiny: Path) -> None:
    with GGUFFile(tiny) as f:
        scales = []
        for i in range(TINY["n_layer"]):
            for kind in PROJECTIONS:
                name = f"blk.{i}.{kind}.weight"
                packed, scale = f.ternary(name)
                values = unpack_i2s_codes(packed, f.info(name).n_elements)  # raises on code 3
                zeros = np.mean(values == 0)
                assert 0.30 < zeros < 0.37, (name, zeros)
                assert abs(np.mean(values)) < 0.02, name
                assert np.isfinite(scale) and scale > 0, name
                scales.append(scale)
    assert len(set(scales)) == len(scales)  # one scale per tensor, not a constant


def test_embeddings_and_norms_are_well_conditioned(tiny: Path) -> None:
    with GGUFFile(tiny) as f:
        emb = f.array("token_embd.weight").astype(np.float32)
        assert np.isfinite(emb).all()
        assert emb.std() == pytest.approx(0.02, rel=0.05)
        assert abs(emb.mean()) < 1e-3
        assert len(np.unique(emb[0])) > emb.shape[1] // 4  # not a constant row
        for i in range(TINY["n_layer"]):
            for kind in NORMS:
                gain = f.array(f"blk.{i}.{kind}.weight")
                assert np.all((gain > 0.5) & (gain < 1.5)), kind


def test_engine_runs_it_with_finite_varied_logits(tiny: Path) -> None:
    model = load_model(tiny, threads=1, ctx_size=64)
    try:
        logits = model.logits([1, 50, 300, 700, 999])
    finally:
        model.close()
    assert np.isfinite(logits).all()
    spread = logits.std(axis=1)
    # Tied head on unit-RMS activations: logit spread ~ 0.02 * sqrt(n_embd), never collapsed.
    assert np.all(spread > 0.25 * 0.02 * np.sqrt(TINY["n_embd"]))
    assert len(set(logits.argmax(axis=1).tolist())) > 1


def test_same_seed_same_file_other_seed_other_weights(tiny: Path, tmp_path: Path) -> None:
    again = build_synthetic_model("tiny", tmp_path / "again.gguf")
    other = build_synthetic_model("tiny", tmp_path / "other.gguf", seed=1)
    assert _sha256(again) == _sha256(tiny)
    with GGUFFile(tiny) as a, GGUFFile(other) as b:
        assert a.metadata == b.metadata
        assert bytes(a.raw("blk.0.attn_q.weight")) != bytes(b.raw("blk.0.attn_q.weight"))


def test_progress_reports_every_tensor(tmp_path: Path) -> None:
    seen: list[tuple[str, int, int]] = []
    build_synthetic_model("tiny", tmp_path / "p.gguf", progress=lambda *a: seen.append(a))
    total = 2 + 11 * TINY["n_layer"]
    assert [i for _, i, _ in seen] == list(range(total))
    assert {t for _, _, t in seen} == {total}
    assert seen[0][0] == "token_embd.weight"


def test_cached_path_builds_once_atomically(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(synthetic_model_path("tiny", cache))) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results[0] == results[1]
    path = results[0]
    mtime = path.stat().st_mtime_ns
    assert synthetic_model_path("tiny", cache) == path
    assert path.stat().st_mtime_ns == mtime
    assert not [p for p in cache.iterdir() if p.name.endswith(".part")]
    with GGUFFile(path) as f:
        assert f.metadata["general.architecture"] == ARCH


def test_unknown_name_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown synthetic model 'huge'"):
        build_synthetic_model("huge", tmp_path / "x.gguf")
    with pytest.raises(NeuroError):
        synthetic_model_path("huge", tmp_path)
    assert not list(tmp_path.iterdir())


# ------------------------------------------------------------------ the peer benchmark's helpers
BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def test_tq2_0_repack_for_llama_cpp_is_lossless(tiny: Path, tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("repack_tq2", BENCHMARKS / "peers" / "repack_tq2.py")
    assert spec is not None and spec.loader is not None
    repack_tq2 = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(repack_tq2)
    out = repack_tq2.repack_i2s_to_tq2_0(tiny, tmp_path / "tq2.gguf", arch="bitnet")
    with GGUFFile(tiny) as src, GGUFFile(out) as dst:
        assert dst.metadata["general.architecture"] == "bitnet"
        assert dst.metadata["bitnet.block_count"] == TINY["n_layer"]
        assert not [k for k in dst.metadata if k.startswith(ARCH + ".")]
        assert dst.metadata["tokenizer.ggml.tokens"] == src.metadata["tokenizer.ggml.tokens"]
        assert set(dst.tensors) == set(src.tensors)
        for name, info in src.tensors.items():
            if info.ggml_type != GGMLType.I2_S:
                assert bytes(dst.raw(name)) == bytes(src.raw(name))
                continue
            assert dst.info(name).ggml_type == GGMLType.TQ2_0
            packed, scale = src.ternary(name)
            values, d = tq2_0_to_ternary(np.asarray(dst.raw(name)), info.n_elements)
            assert np.array_equal(values, unpack_i2s_codes(packed, info.n_elements)), name
            assert d == pytest.approx(scale, rel=1e-3), name  # fp16 block scale


def test_compare_peers_measures_our_engine(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "compare_peers.py"), "--model", str(tiny),
         "--engines", "neuro-bitnet", "--threads", "1", "--ctx", "64", "--prompt", "16",
         "--gen", "4", "--warmup", "1", "--repeats", "2", "--rounds", "2", "--json", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "neuro-bitnet" in proc.stdout and "decode tok/s" in proc.stdout
    result = json.loads(out.read_text())["results"]["neuro-bitnet"]
    assert len(result["runs"]) == 4 and result["rounds"] == 2  # two interleaved rounds of 2 runs
    assert all(r["decode_steps"] == 4 for r in result["runs"])
    assert result["prefill_tps"] > 0 and result["decode_tps"] > 0
    assert result["peak_rss_mb"] > 10 and result["load_s"] > 0


def test_compare_peers_sweeps_prompt_lengths(tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "sweep.json"
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "compare_peers.py"), "--model", str(tiny),
         "--engines", "neuro-bitnet", "--threads", "1", "--ctx", "64", "--prompt-tokens", "8,24",
         "--gen", "2", "--warmup", "0", "--repeats", "1", "--rounds", "2", "--json", str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    rows = [line.split() for line in proc.stdout.splitlines() if "neuro-bitnet" in line]
    assert [row[0] for row in rows] == ["8", "24"]  # one row per prompt length
    # interleaved: round 1 runs both lengths before round 2 starts
    order = [line.rsplit("prompt ", 1)[1].rstrip(" .") for line in proc.stderr.splitlines() if "running" in line]
    assert order == ["8", "24", "8", "24"]
    payload = json.loads(out.read_text())
    assert "results" not in payload  # the flat shape is only for a single prompt length
    by_prompt = payload["results_by_prompt"]
    assert set(by_prompt) == {"8", "24"}
    for n, results in by_prompt.items():
        r = results["neuro-bitnet"]
        assert r["prompt"] == int(n) and r["rounds"] == 2 and len(r["runs"]) == 2
        assert all(run["prefill_tps"] > 0 and run["prefill_cpu_s"] > 0 for run in r["runs"])
        assert r["prefill_cpu_ms"] > 0


@pytest.mark.parametrize("argv, message", [
    (["--prompt-tokens", "128,x"], "comma-separated token counts"),
    (["--prompt-tokens", "128,128"], "distinct positive"),
    (["--prompt-tokens", "0"], "distinct positive"),
    (["--prompt", "64", "--prompt-tokens", "128"], "not both"),
    (["--prompt-tokens", "128,4096"], "must fit in --ctx"),
])
def test_compare_peers_rejects_bad_prompt_lengths(argv: list[str], message: str) -> None:
    proc = subprocess.run([sys.executable, str(BENCHMARKS / "compare_peers.py"), *argv],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_compare_peers_rejects_unknown_engine() -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCHMARKS / "compare_peers.py"), "--engines", "vllm"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "unknown engine(s) vllm" in proc.stderr
