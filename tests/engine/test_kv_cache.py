"""The KV cache's element type (f32, f16) and the blocked attention over it, against the numpy
reference and across kernel sets, batch splits and thread counts, on odd shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neuro_bitnet.config import load_settings
from neuro_bitnet.engine import EngineError, _core, load_model
from neuro_bitnet.errors import ConfigError

from support import numpy_forward
from support.core_models import HAS_AVX2, assert_close, make_spec, run

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "bitnet-b1.58" / "model.gguf"

# head_dim 20: no vector path (portable kernels); 24: vector scores, portable values; 16, 32,
# 48: both vector. G = n_head / n_head_kv of 1, 3, 5 and 8: query groups that are not multiples of
# the 4-query kernel tiles, and prefill tiles of 32 / G tokens. (n_head * head_dim: whole
# 128-column blocks, as attn_output's input must be.)
SHAPES = [
    dict(n_head=32, n_head_kv=8, head_dim=20),
    dict(n_head=16, n_head_kv=2, head_dim=24),
    dict(n_head=20, n_head_kv=4, head_dim=32),
    dict(n_head=24, n_head_kv=8, head_dim=16),
    dict(n_head=8, n_head_kv=8, head_dim=48),
]


def _tokens(n: int, seed: int = 0) -> list[int]:
    return list(np.random.default_rng(seed).integers(0, 300, size=n))


@pytest.mark.parametrize("kv", ["f32", "f16"])
@pytest.mark.parametrize("isa", ["auto", "portable"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"h{s['n_head']}kv{s['n_head_kv']}d{s['head_dim']}")
def test_blocked_attention_matches_numpy(shape: dict, isa: str, kv: str) -> None:
    """150 positions: two whole 64-position blocks and a partial one, prefill tiles that start
    and end inside blocks (the core's batches are 64 tokens), then single-token decode."""
    spec = dict(make_spec(seed=21, n_layer=1, ctx_size=200, **shape), kv_cache=kv)
    tokens = _tokens(150)
    model = _core.Model(spec, isa=isa)
    ref = numpy_forward.NumpyModel(spec)
    got = np.concatenate([run(model, tokens[:140], 0)] + [run(model, [t], 140 + i) for i, t in enumerate(tokens[140:])])
    assert_close(got, ref.forward(tokens, 0))


@pytest.mark.parametrize("kv", ["f32", "f16"])
def test_long_context_segments_match_numpy(kv: str) -> None:
    """ctx 2100: 33 blocks fold into segments of 3 blocks (192 positions), which a decode step
    splits across the threads and merges; 420 positions cross three segment boundaries."""
    spec = dict(make_spec(seed=22, n_layer=1, ctx_size=2100, n_threads=3), kv_cache=kv)
    tokens = _tokens(420, seed=1)
    model = _core.Model(spec)
    ref = numpy_forward.NumpyModel(spec)
    got = np.concatenate([run(model, tokens[:400], 0)] + [run(model, [t], 400 + i) for i, t in enumerate(tokens[400:])])
    assert_close(got, ref.forward(tokens, 0))


@pytest.mark.parametrize("kv", ["f32", "f16"])
@pytest.mark.parametrize("isa", ["auto", "portable"])
def test_results_do_not_depend_on_the_work_split(isa: str, kv: str) -> None:
    """Bit for bit: a prefill (tiles of tokens sharing each block), token-by-token decode (the
    cache split across threads by segments) and 1, 2 or 3 threads give the same logits."""
    spec = dict(make_spec(seed=23, n_layer=2, ctx_size=1100, n_head=24, n_head_kv=8, head_dim=16,
                          n_threads=1), kv_cache=kv)
    tokens = _tokens(300, seed=2)
    one = _core.Model(spec, isa=isa)
    decode = np.concatenate([run(one, [t], i) for i, t in enumerate(tokens)])
    for threads in (1, 2, 3):
        model = _core.Model(dict(spec, n_threads=threads), isa=isa)
        np.testing.assert_array_equal(run(model, tokens, 0), decode)
        np.testing.assert_array_equal(run(model, tokens[250:], 250), decode[250:])  # batches of 50: tiles


@pytest.mark.skipif(not HAS_AVX2, reason="no AVX2 on this CPU")
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"h{s['n_head']}kv{s['n_head_kv']}d{s['head_dim']}")
def test_f16_cache_avx2_agrees_with_portable(shape: dict) -> None:
    spec = dict(make_spec(seed=24, n_layer=1, ctx_size=140, **shape), kv_cache="f16")
    fast, slow = _core.Model(spec, isa="auto"), _core.Model(spec, isa="portable")
    tokens = _tokens(130, seed=3)
    got = np.concatenate([run(fast, tokens, 0)] + [run(fast, [i], 130 + i) for i in range(3)])
    want = np.concatenate([run(slow, tokens, 0)] + [run(slow, [i], 130 + i) for i in range(3)])
    assert_close(got, want)


def test_f16_cache_saturates_instead_of_overflowing() -> None:
    """Values beyond the half range are stored as +-65504 (as the reference does), not as
    infinities that would turn the attention into NaN."""
    spec = make_spec(seed=25, n_layer=1, ctx_size=32)
    spec["layers"][0]["attn_v"]["scale"] *= 1e6  # values of ~1e5 to 1e6
    spec["kv_cache"] = "f16"
    got = run(_core.Model(spec), _tokens(20, seed=4), 0)
    assert np.isfinite(got).all()
    assert_close(got, numpy_forward.NumpyModel(spec).forward(_tokens(20, seed=4), 0))


def test_spec_refuses_an_unknown_cache_type() -> None:
    with pytest.raises(ValueError, match="kv_cache"):
        _core.Model(dict(make_spec(n_layer=1), kv_cache="q8"))


def test_kv_cache_comes_from_the_argument_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NEURO_BITNET_KV_CACHE", raising=False)
    assert load_settings().kv_cache == "f16"
    with load_model(FIXTURE, threads=1, ctx_size=32) as model:
        assert model.kv_cache == "f16"
    monkeypatch.setenv("NEURO_BITNET_KV_CACHE", "F32")
    with load_model(FIXTURE, threads=1, ctx_size=32) as model:
        assert model.kv_cache == "f32"
    with load_model(FIXTURE, threads=1, ctx_size=32, kv_cache="f16") as model:  # the argument wins
        assert model.kv_cache == "f16"
    monkeypatch.setenv("NEURO_BITNET_KV_CACHE", "q3")
    with pytest.raises(ConfigError, match="NEURO_BITNET_KV_CACHE must be one of f16, f32"):
        load_model(FIXTURE, threads=1, ctx_size=32)
    monkeypatch.delenv("NEURO_BITNET_KV_CACHE")
    with pytest.raises(ConfigError, match="--kv-cache must be one of"):
        load_model(FIXTURE, threads=1, ctx_size=32, kv_cache="int4")


def test_both_caches_give_the_reference_greedy_answer() -> None:
    """The f16 cache (the default) and the f32 cache decode the fixture's greedy tokens."""
    ref = np.load(FIXTURE.parent / "reference.npz")
    n = int(ref["lengths"][0])
    ids, want = ref["tokens"][0, :n].tolist(), ref["greedy"][0].tolist()
    for kv in ("f32", "f16"):
        with load_model(FIXTURE, threads=2, ctx_size=128, head="exact", kv_cache=kv) as model:
            stop = model.tokenizer.stop_ids
            expected = want[: next((i for i, t in enumerate(want) if t in stop), len(want))]
            answer = model.generate(ids, max_tokens=len(want), temperature=0, repeat_penalty=1.0)
            "".join(answer)
            assert answer.result.tokens == expected, kv


def test_bad_kv_cache_argument_is_an_engine_error() -> None:
    from neuro_bitnet.engine.model import BitNetModel

    with pytest.raises(EngineError, match="kv_cache must be one of"):
        BitNetModel(FIXTURE, threads=1, ctx_size=32, kv_cache="f8")


@pytest.mark.parametrize("head", ["exact", "q4"])
def test_logits_stay_exact_with_an_f16_cache(head: str) -> None:
    """Scoring calls keep keys and values in f32: the f16 model's logits() are the f32 model's,
    bit for bit; exact=False takes the f16 cache. Generation after a scoring call does not reuse
    its f32 positions (cached_tokens 0) and decodes as a fresh model does."""
    ref = np.load(FIXTURE.parent / "reference.npz")
    ids = ref["tokens"][1, : int(ref["lengths"][1])].tolist()
    with load_model(FIXTURE, threads=2, ctx_size=128, head=head, kv_cache="f32") as f32, \
            load_model(FIXTURE, threads=2, ctx_size=128, head=head, kv_cache="f16") as f16, \
            load_model(FIXTURE, threads=2, ctx_size=128, head=head, kv_cache="f16") as fresh:
        np.testing.assert_array_equal(f16.logits(ids), f32.logits(ids))
        assert not np.array_equal(f16.logits(ids, exact=False), f32.logits(ids, exact=False))
        f16.logits(ids)
        answer = f16.generate(ids, max_tokens=8, temperature=0, repeat_penalty=1.0)
        want = fresh.generate(ids, max_tokens=8, temperature=0, repeat_penalty=1.0)
        assert "".join(answer) == "".join(want)
        assert answer.result.cached_tokens == 0 and answer.result.tokens == want.result.tokens
