"""The C compute core (`_core.Model`) against the numpy reference on tiny random models."""

from __future__ import annotations

import os
import pathlib
import threading

import numpy as np
import pytest

from neuro_bitnet.config import ISA_CHOICES
from neuro_bitnet.engine import _core

from support import numpy_forward
from support.core_models import BEST_ISA, SIMD_SETS, assert_close, make_spec, run


def model_for(spec: dict, isa: str = "auto") -> _core.Model:
    return _core.Model(spec, isa=isa)


TOKENS = [5, 17, 299, 0, 42, 128, 7, 250, 3, 99, 64]

CASES = [
    dict(),
    dict(ffn_act="silu", sub_norms=False),
    dict(rope_neox=False, n_head_kv=4, head_dim=64, n_embd=256, n_ff=256),
    dict(head="q8"),
    dict(head="q8", embd_type="bf16", tied=False, n_layer=3),
    dict(head="q4"),
    dict(head="q4", embd_type="f32", tied=False),
    dict(embd_type="f32", tied=False, ffn_act="silu"),
    dict(embd_type="bf16", n_threads=1, rope_neox=False),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
@pytest.mark.parametrize("isa", ["auto", "portable"])
def test_prefill_matches_numpy(case: dict, isa: str) -> None:
    spec = make_spec(seed=len(str(case)), **case)
    model = model_for(spec, isa)
    assert model.isa == (BEST_ISA if isa == "auto" else "portable")
    want = numpy_forward.NumpyModel(spec).forward(TOKENS, 0)
    assert_close(run(model, TOKENS, 0), want)


@pytest.mark.parametrize("head", ["exact", "q8", "q4"])
def test_decode_equals_prefill_and_prefix_reuse(head: str) -> None:
    spec = make_spec(seed=3, head=head)
    model = model_for(spec)
    prefill = run(model, TOKENS, 0)
    decode = np.concatenate([run(model, [t], i, all_logits=False) for i, t in enumerate(TOKENS)])
    # Same math per token, only the ternary kernel's token tiling differs: integer-exact.
    np.testing.assert_allclose(decode, prefill, rtol=0, atol=1e-4 * np.ptp(prefill))
    # Reuse the first 4 positions, then continue with different tokens.
    other = [11, 22, 33, 44]
    got = run(model, other, 4)
    ref = numpy_forward.NumpyModel(spec)
    want = ref.forward(TOKENS[:4] + other, 0)[4:]
    assert_close(got, want)
    # Last-token-only logits equal the last row of all_logits.
    last = run(model, other, 4, all_logits=False)
    np.testing.assert_allclose(last[0], got[-1], rtol=0, atol=1e-6 * np.ptp(got))


@pytest.mark.parametrize("isa", ["auto", "portable"])
def test_a_batch_gives_the_logits_of_decoding_its_tokens_one_by_one(isa: str) -> None:
    """Bit for bit, for batches of 1 to 9 tokens (every tile of the ternary kernel, and with
    n_ff = 333 the two-row tile's row left over): the ternary dots are integers and everything
    else is computed per token, so how tokens are grouped into tiles changes nothing."""
    spec = make_spec(seed=21, n_ff=333, ctx_size=16)
    model = model_for(spec, isa)
    decode = np.concatenate([run(model, [t], i) for i, t in enumerate(TOKENS[:9])])
    for n in range(1, 10):
        np.testing.assert_array_equal(run(model, TOKENS[:n], 0), decode[:n])


@pytest.mark.parametrize("isa", ["auto", "portable"])
def test_quantized_heads_recompute_their_best_candidates_exactly(isa: str) -> None:
    """The core recomputes a quantized head's 128 best logits from the float rows: with a vocabulary
    of at most 128, every logit is exact; with more, the 128 largest match the exact head and the rest
    only approximately."""
    tokens = [5, 17, 49, 0, 42]
    small = make_spec(seed=10, n_vocab=60)
    exact = run(model_for(dict(small, head="exact"), isa), tokens, 0)
    for head in ("q8", "q4"):
        np.testing.assert_allclose(run(model_for(dict(small, head=head), isa), tokens, 0), exact,
                                   rtol=0, atol=1e-6 * np.ptp(exact))
    big = make_spec(seed=11, n_vocab=300)
    exact = run(model_for(dict(big, head="exact"), isa), tokens, 0)
    approx = run(model_for(dict(big, head="q4"), isa), tokens, 0)
    for want, got in zip(exact, approx):
        is_exact = np.abs(got - want) <= 1e-6 * np.ptp(want)
        assert 128 <= is_exact.sum() < 300  # the candidates are exact, the tail is the 4-bit copy
        top = np.argsort(-want)[:10]
        assert is_exact[top].all() and np.argmax(got) == np.argmax(want)


def test_head_rows_come_from_the_mapping_when_the_file_cannot_give_them() -> None:
    """head_fd names where the core may pread the head's rows; an fd that gives nothing back
    (here /dev/null: end of file at once) must not change a single logit."""
    spec = make_spec(seed=12, head="q4")
    want = run(_core.Model(spec), TOKENS, 0)
    fd = os.open(os.devnull, os.O_RDONLY)
    try:
        got = run(_core.Model(dict(spec, head_fd=fd, head_offset=0)), TOKENS, 0)
    finally:
        os.close(fd)
    np.testing.assert_array_equal(got, want)
    with pytest.raises(ValueError, match="head_fd and head_offset"):
        _core.Model(dict(spec, head_fd=3, head_offset=-1))


def test_token_by_token_decode_over_80_positions_matches_numpy() -> None:
    spec = make_spec(seed=13, ctx_size=96, n_layer=1)
    tokens = list(np.random.default_rng(2).integers(0, 300, size=80))
    model = model_for(spec)
    got = np.concatenate([run(model, [t], i) for i, t in enumerate(tokens)])
    assert_close(got, numpy_forward.NumpyModel(spec).forward(tokens, 0))


def test_long_prompt_spans_several_batches() -> None:
    spec = make_spec(seed=4, ctx_size=160, n_layer=1)
    n = 150  # more than the core's internal token batch (64)
    tokens = list(np.random.default_rng(0).integers(0, 300, size=n))
    model = model_for(spec)
    got = run(model, tokens, 0)
    want = numpy_forward.NumpyModel(spec).forward(tokens, 0)
    assert_close(got, want)


@pytest.mark.parametrize("isa", SIMD_SETS)
@pytest.mark.parametrize("head", ["exact", "q8", "q4"])
def test_portable_and_simd_sets_agree(head: str, isa: str) -> None:
    spec = make_spec(seed=5, head=head, n_embd=256, head_dim=64)
    fast, slow = model_for(spec, isa), model_for(spec, "portable")
    assert (fast.isa, slow.isa) == (isa, "portable")
    assert_close(run(fast, TOKENS, 0), run(slow, TOKENS, 0), rel=1e-4)
    assert_close(run(fast, [1], len(TOKENS)), run(slow, [1], len(TOKENS)), rel=1e-4)


@pytest.mark.parametrize("isa", SIMD_SETS)
@pytest.mark.parametrize("n_tokens", [*range(1, 18), 64, 70])
def test_simd_tiles_agree_with_portable_on_odd_rows(n_tokens: int, isa: str) -> None:
    """n_ff = 333: gate/up have a row count that is neither a multiple of 2 nor of 4 (the 2- and
    4-row prefill tiles leave rows over) and ffn_down's padded columns; token counts cover whole
    and partial 4-token tiles."""
    spec = make_spec(seed=9, n_ff=333, n_layer=1, ctx_size=80)
    tokens = list(np.random.default_rng(n_tokens).integers(0, 300, size=n_tokens))
    fast, slow = model_for(spec, isa), model_for(spec, "portable")
    assert fast.isa == isa
    assert_close(run(fast, tokens, 0), run(slow, tokens, 0))


AVX512_SETS = [s for s in SIMD_SETS if s != "avx2"]


@pytest.mark.skipif(not AVX512_SETS, reason="this CPU runs no AVX-512 kernel set")
@pytest.mark.parametrize("isa", AVX512_SETS)
@pytest.mark.parametrize("head", ["exact", "q4"])
@pytest.mark.parametrize("n_embd", [128, 256])  # one block a row (odd), two (a whole pair)
@pytest.mark.parametrize("n_tokens", [1, 2, 3, 4, 5, 8, 16, 17, 33, 64, 70])
def test_avx512_sets_give_the_avx2_logits_bit_for_bit(n_tokens: int, n_embd: int, head: str, isa: str) -> None:
    """avx512vnni and amx differ from avx2 only in their matrix kernels (ternary tiles: ymm or
    zmm VNNI, AMX from 5 tokens; the multi-token q4 head), which compute the same integer sums:
    every logit must be identical, with either head. n_ff = 333 leaves rows over the 64-row runs
    and 16-row tiles (and pads ffn_down to three blocks, an odd count); 17 and 70 end with a
    partial token tile, 70 spans two batches."""
    spec = make_spec(seed=11, n_embd=n_embd, head_dim=64, n_ff=333, n_layer=2, ctx_size=80, head=head)
    tokens = list(np.random.default_rng(n_tokens).integers(0, 300, size=n_tokens))
    fast, avx2 = model_for(spec, isa), model_for(spec, "avx2")
    assert (fast.isa, avx2.isa) == (isa, "avx2")
    np.testing.assert_array_equal(run(fast, tokens, 0), run(avx2, tokens, 0))


def test_threads_agree_and_two_models_run_concurrently() -> None:
    spec1 = make_spec(seed=6, n_threads=1)
    spec2 = dict(spec1, n_threads=2)
    m1, m2 = _core.Model(spec1), _core.Model(spec2)
    assert (m1.n_threads, m2.n_threads) == (1, 2)
    want = run(m1, TOKENS, 0)
    results: dict[int, np.ndarray] = {}

    def work(i: int, model: _core.Model) -> None:
        results[i] = run(model, TOKENS, 0)

    threads = [threading.Thread(target=work, args=(i, m)) for i, m in enumerate([m1, m2])]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    np.testing.assert_allclose(results[0], want, rtol=0, atol=0)
    np.testing.assert_array_equal(results[1], want)


def test_attributes_and_features() -> None:
    feats = _core.cpu_features()
    assert set(feats) == {"avx2", "fma", "f16c", "avx512vnni", "amx"}
    model = _core.Model(make_spec(ctx_size=20))
    assert (model.n_vocab, model.ctx_size, model.n_threads) == (300, 20, 2)
    with pytest.raises(AttributeError):
        model.n_vocab = 5
    with pytest.raises(ValueError, match="unknown kernel set"):
        _core.Model(make_spec(n_layer=1), isa="sse9")


@pytest.mark.parametrize("isa", ISA_CHOICES)
def test_every_isa_setting_is_a_kernel_set(isa: str) -> None:
    """The settings' choices are exactly what the core takes; 'auto' is the best one there is."""
    if isa not in ("auto", "portable", *SIMD_SETS):
        with pytest.raises(ValueError, match="cannot run"):
            _core.Model(make_spec(n_layer=1), isa=isa)
        return
    want = {"auto": BEST_ISA}.get(isa, isa)
    assert _core.Model(make_spec(n_layer=1), isa=isa).isa == want


def test_env_forces_portable(monkeypatch: pytest.MonkeyPatch) -> None:
    """NEURO_BITNET_ISA is read by the settings and reaches the core through load_model."""
    from neuro_bitnet.engine import load_model

    fixture = pathlib.Path(__file__).parents[1] / "fixtures" / "bitnet-b1.58" / "model.gguf"
    monkeypatch.setenv("NEURO_BITNET_ISA", "portable")
    with load_model(fixture, threads=1, ctx_size=16) as model:
        assert model.isa == "portable"
    with load_model(fixture, threads=1, ctx_size=16, isa="auto") as model:  # the argument wins
        assert model.isa == BEST_ISA


def test_forward_errors() -> None:
    model = _core.Model(make_spec(ctx_size=8))
    logits = np.zeros(300, dtype=np.float32)
    with pytest.raises(ValueError, match="ctx_size"):
        model.forward(np.arange(5, dtype=np.int32), 4, logits)
    with pytest.raises(ValueError, match="out of range"):
        model.forward(np.array([1, 300], dtype=np.int32), 0, logits)
    with pytest.raises(ValueError, match="out of range"):
        model.forward(np.array([-1], dtype=np.int32), 0, logits)
    with pytest.raises(ValueError, match="logits"):
        model.forward(np.array([1, 2], dtype=np.int32), 0, logits, all_logits=True)
    with pytest.raises(ValueError, match="logits"):
        model.forward(np.array([1], dtype=np.int32), 0, np.zeros(300, dtype=np.float64))
    with pytest.raises(ValueError, match="logits"):
        model.forward(np.array([1], dtype=np.int32), 0, bytes(1200))
    with pytest.raises(ValueError, match="int32"):
        model.forward(np.array([1], dtype=np.int64), 0, logits)
    with pytest.raises(ValueError, match="empty"):
        model.forward(np.array([], dtype=np.int32), 0, logits)
    with pytest.raises(ValueError, match="ctx_size"):
        model.forward(np.array([1], dtype=np.int32), -1, logits)
    model.forward(np.array([1], dtype=np.int32), 7, logits)  # still usable
    assert np.isfinite(logits).all()


def _broken(change) -> dict:
    spec = make_spec(n_layer=2)
    change(spec)
    return spec


BAD_SPECS = {
    "missing n_embd": (lambda s: s.pop("n_embd"), "n_embd"),
    "n_head not multiple": (lambda s: s.update(n_head_kv=3), "n_head_kv"),
    "bad act": (lambda s: s.update(ffn_act="gelu"), "ffn_act"),
    "bad head": (lambda s: s.update(head="q5"), "head"),
    "bad embd type": (lambda s: s.update(tok_embd_type="q8_0"), "tok_embd_type"),
    "short embd": (lambda s: s.update(tok_embd=bytes(10)), "tok_embd"),
    "short norm": (lambda s: s["layers"][1].update(ffn_norm=np.zeros(3, np.float32)), "layers\\[1\\].ffn_norm"),
    "missing sub norm": (lambda s: s["layers"][0].pop("attn_sub_norm"), "attn_sub_norm"),
    "wrong shape": (lambda s: s["layers"][0]["attn_q"].update(rows=64), "attn_q"),
    "short data": (lambda s: s["layers"][0]["ffn_up"].update(data=bytes(100)), "ffn_up"),
    "layer count": (lambda s: s["layers"].pop(), "n_layer"),
    "zero threads": (lambda s: s.update(n_threads=0), "n_threads"),
    "not a buffer": (lambda s: s.update(output_norm=[1.0] * 128), "output_norm"),
    "not contiguous": (lambda s: s.update(output_norm=np.zeros(256, np.float32)[::2]), "output_norm"),
}


@pytest.mark.parametrize("name", list(BAD_SPECS))
def test_bad_specs_raise_value_error(name: str) -> None:
    change, match = BAD_SPECS[name]
    with pytest.raises(ValueError, match=match):
        _core.Model(_broken(change))


def test_ffn_down_rows_must_be_padded_to_whole_blocks() -> None:
    # n_ff = 200: ffn_down rows must come padded to 256 (the tiny `bitnet-ff320` fixture checks the
    # padded path against the reference); an unpadded 200-column matrix is refused.
    spec = make_spec(n_ff=384)
    spec.update(n_ff=200)
    for layer in spec["layers"]:
        for k in ("ffn_gate", "ffn_up"):
            layer[k] = {"data": bytes(200 * 128 // 4), "scale": 1.0, "rows": 200, "cols": 128}
        layer["ffn_down"] = {"data": bytes(128 * 200 // 4), "scale": 1.0, "rows": 128, "cols": 200}
        layer["ffn_sub_norm"] = np.ones(200, np.float32)
    with pytest.raises(ValueError, match=r"ffn_down.*128 x 256"):
        _core.Model(spec)


def test_many_short_steps_with_more_threads_than_cores() -> None:
    """Stresses the pool's hand-off (workers revoked or late): results must not depend on it."""
    spec = make_spec(seed=8, n_layer=1, ctx_size=64, n_threads=1)
    one, many = _core.Model(spec), _core.Model(dict(spec, n_threads=3))
    tokens = list(np.random.default_rng(1).integers(0, 300, size=60))
    got = np.concatenate([run(many, [t], i) for i, t in enumerate(tokens)])
    want = np.concatenate([run(one, [t], i) for i, t in enumerate(tokens)])
    np.testing.assert_array_equal(got, want)  # each output is computed whole by one thread
