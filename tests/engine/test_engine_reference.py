"""The engine against the reference implementation (transformers), on the committed fixtures.

For every fixture model and prompt: the same top-1 token as the reference at every position,
max |logit difference| within 1% of the reference logit range, and identical greedy
continuations. Both output-layer modes are checked (the default int8 head and the exact one).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neuro_bitnet.engine import load_model

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
MODEL_FILES = sorted(p for p in FIXTURES.glob("*/model*.gguf") if (p.parent / "reference.npz").exists())
TOLERANCE = 0.01  # of the reference logit range


def _id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def _prompts(path: Path):
    with np.load(path.parent / "reference.npz") as ref:
        for i, n in enumerate(ref["lengths"]):
            yield ref["tokens"][i, :n].tolist(), ref["logits"][i, :n], ref["greedy"][i].tolist()


def test_there_are_fixtures_for_every_architecture():
    archs = {p.parent.name for p in MODEL_FILES}
    assert {"bitnet-b1.58", "bitnet", "llama"} <= archs


@pytest.mark.parametrize("path", MODEL_FILES, ids=_id)
@pytest.mark.parametrize("threads", [1, 2])
def test_logits_match_reference(path, threads):
    model = load_model(path, threads=threads, ctx_size=128, head="exact")
    for ids, want, _ in _prompts(path):
        got = model.logits(ids)
        assert got.shape == want.shape and got.dtype == np.float32
        spread = float(want.max() - want.min())
        assert np.abs(got - want).max() <= TOLERANCE * spread
        assert (got.argmax(-1) == want.argmax(-1)).all()


@pytest.mark.parametrize("path", MODEL_FILES, ids=_id)
def test_int8_head_stays_close_to_the_exact_one(path):
    """The default int8 head is lossy: bounded error, top-1 kept almost everywhere (the greedy
    test below requires identical continuations). Measured on these fixtures: max error 0.5-0.7%
    of the logit range, top-1 agreement 95-100% over all prompt positions."""
    exact = load_model(path, threads=2, ctx_size=128, head="exact")
    fast = load_model(path, threads=2, ctx_size=128, head="q8")
    agree = total = 0
    for ids, want, _ in _prompts(path):
        a, b = exact.logits(ids), fast.logits(ids)
        assert np.abs(a - b).max() <= TOLERANCE * float(want.max() - want.min())
        agree += int((a.argmax(-1) == b.argmax(-1)).sum())
        total += len(ids)
    assert agree / total >= 0.9


@pytest.mark.parametrize("head", ["exact", "q8"])
@pytest.mark.parametrize("path", MODEL_FILES, ids=_id)
def test_greedy_generation_matches_reference(path, head):
    model = load_model(path, threads=2, ctx_size=128, head=head)
    stop_ids = model.tokenizer.stop_ids
    for ids, _, greedy in _prompts(path):
        expected = []
        for token in greedy:  # the reference ran past end-of-turn tokens; generation stops there
            if token in stop_ids:
                break
            expected.append(token)
        text = "".join(model.generate(ids, max_tokens=len(greedy), temperature=0, repeat_penalty=1.0))
        assert model.last_tokens == expected
        assert text == model.tokenizer.decode(expected, skip_special=True)
