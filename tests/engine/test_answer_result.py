"""Each answer carries its own AnswerResult: a later answer leaves an earlier one's as it was."""

from __future__ import annotations

import pytest

from neuro_bitnet.engine import load_model
from neuro_bitnet.engine.batch import BatchScheduler
from neuro_bitnet.engine.synthetic import build_synthetic_model


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory):
    path = build_synthetic_model("tiny", tmp_path_factory.mktemp("result") / "tiny.gguf")
    m = load_model(path, threads=1, ctx_size=64, parallel=2)
    yield m
    m.close()


def test_each_generation_keeps_its_own_result(model) -> None:
    first = model.generate([1, 2, 3], max_tokens=4, temperature=0)
    first_text = "".join(first)
    kept = first.result.as_dict()
    second = model.generate([1, 2, 3, 4, 5, 6], max_tokens=2, temperature=0)
    second_text = "".join(second)
    assert first.result.as_dict() == kept
    assert first.result.text == first_text and second.result.text == second_text
    assert (first.result.prompt_tokens, second.result.prompt_tokens) == (3, 6)
    assert len(first.result.tokens) == first.result.generated_tokens <= 4
    assert len(second.result.tokens) == second.result.generated_tokens <= 2
    assert first.result.finish_reason in ("stop", "length") and second.result.finish_reason in ("stop", "length")
    assert first.result.load_seconds == model.load_seconds


def test_a_closed_generation_has_the_text_it_gave(model) -> None:
    answer = model.generate([1, 2, 3], max_tokens=30, temperature=0)
    given = ""
    for piece in answer:
        given += piece
        if piece:
            break
    answer.close()
    assert answer.result.text == given
    if given:
        assert answer.result.first_token_seconds is not None


def test_batch_requests_have_their_own_results(model) -> None:
    sched = BatchScheduler(model)
    a = sched.submit([1, 2, 3], max_tokens=3, temperature=0)
    b = sched.submit([4, 5, 6, 7], max_tokens=5, temperature=0)
    texts = {a.id: "", b.id: ""}
    for piece in sched.run():
        texts[piece.request.id] += piece.text
    assert (a.result.prompt_tokens, b.result.prompt_tokens) == (3, 4)
    assert a.result.text == texts[a.id] and b.result.text == texts[b.id]
    assert a.result.tokens == a.tokens and len(a.tokens) == a.result.generated_tokens <= 3
    assert len(b.tokens) == b.result.generated_tokens <= 5
    alone = model.generate([1, 2, 3], max_tokens=3, temperature=0)
    assert "".join(alone) == a.result.text and alone.result.tokens == a.result.tokens
