"""Several sequences in one forward pass: the core's KV slots and the BatchScheduler.

Every token is computed independently of the others in its batch (per-token int8 activations,
attention over its own slot only), so batching must not change a single bit: the logits of a
batched token equal those of the same sequence run alone, and a greedy (or seeded) request gets
exactly the tokens it gets alone, whoever shares its steps.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neuro_bitnet.engine import EngineError, load_model
from neuro_bitnet.engine.batch import BatchScheduler

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
MODELS = ["bitnet-b1.58", "bitnet", "llama"]
ISAS = ["auto", "portable"]
CTX = 160


def _load(name: str, isa: str, parallel: int, head: str = "q4"):
    return load_model(FIXTURES / name / "model.gguf", threads=2, ctx_size=CTX, head=head, isa=isa,
                      parallel=parallel)


def _prompts(n_vocab: int, lengths: list[int], seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [[int(t) for t in rng.integers(0, n_vocab, size=n)] for n in lengths]


@pytest.fixture(scope="module", params=[(m, i) for m in MODELS for i in ISAS], ids=lambda p: f"{p[0]}-{p[1]}")
def model8(request):
    """A model with 8 KV slots (shared by the tests of one fixture and kernel path)."""
    m = _load(*request.param, parallel=8)
    yield m
    m.close()


def _alone(m, ids: list[int], **kw) -> list[int]:
    return _alone_text(m, ids, **kw)[0]


def _alone_text(m, ids: list[int], **kw) -> tuple[list[int], str]:
    """Tokens and streamed text of ``ids`` answered alone (``generate``, slot 0)."""
    answer = m.generate(ids, **kw)
    text = "".join(answer)
    return list(answer.result.tokens), text


# -- the core ---------------------------------------------------------------------------------
@pytest.mark.parametrize("head", ["q4", "exact"])
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name", MODELS + ["bitnet-ff320"])
def test_batched_logits_are_bit_identical(name: str, isa: str, head: str) -> None:
    """Interleaved chunks of 4 sequences (decode tokens beside prompt chunks, batches past one
    core batch of 64) give the very logits of each sequence run alone."""
    single, multi = _load(name, isa, 1, head), _load(name, isa, 4, head)
    V = single.n_vocab
    seqs = _prompts(V, [5, 40, 1, 90], seed=1)
    alone = []
    for ids in seqs:
        out = np.empty((len(ids), V), dtype=np.float32)
        single._core.forward(np.asarray(ids, dtype=np.int32), 0, out, True)
        alone.append(out)
    got = [np.full((len(ids), V), np.nan, dtype=np.float32) for ids in seqs]
    fed = [0] * len(seqs)
    chunk = [1, 7, 1, 70]  # tokens per step and sequence: 79 in the first step
    while any(f < len(s) for f, s in zip(fed, seqs)):
        toks, slots, pos, where = [], [], [], []
        for i, ids in enumerate(seqs):
            n = min(chunk[i], len(ids) - fed[i])
            for p in range(fed[i], fed[i] + n):
                toks.append(ids[p]), slots.append(3 - i), pos.append(p), where.append((i, p))
            fed[i] += n
        logits = np.empty((len(toks), V), dtype=np.float32)
        multi._core.forward_batch(np.asarray(toks, np.int32), np.asarray(slots, np.int32),
                                  np.asarray(pos, np.int32), np.arange(len(toks), dtype=np.int32), logits)
        for row, (i, p) in enumerate(where):
            got[i][p] = logits[row]
    for a, b in zip(alone, got):
        assert np.array_equal(a, b)
    last = np.empty(V, dtype=np.float32)
    for ids, b in zip(seqs, got):  # the head of one token alone (decode) gives the same bits too
        single._core.forward(np.asarray(ids, dtype=np.int32), 0, last)
        assert np.array_equal(last, b[-1])
    single.close()
    multi.close()


def test_forward_batch_refuses_bad_arguments() -> None:
    m = _load("bitnet-b1.58", "auto", 2)
    core, V = m._core, m.n_vocab
    assert core.n_seq == 2
    i32 = lambda *v: np.asarray(v, dtype=np.int32)  # noqa: E731
    one = np.empty((1, V), dtype=np.float32)
    cases = [
        ((i32(1), i32(2), i32(0), i32(0), one), "slot 2"),
        ((i32(1), i32(0), i32(CTX), i32(0), one), "does not fit ctx_size"),
        ((i32(1, 2), i32(0, 0), i32(3, 5), i32(1), one), "consecutive positions"),
        ((i32(1, 2), i32(0, 1), i32(0, 0), i32(1, 0), np.empty((2, V), np.float32)), "strictly increasing"),
        ((i32(1), i32(0), i32(0), i32(0), np.empty((2, V), np.float32)), "logits holds"),
        ((i32(V), i32(0), i32(0), i32(0), one), "out of range"),
        ((i32(1, 2), i32(0), i32(0, 1), i32(0), one), "same length"),
        ((np.asarray([1], np.int64), i32(0), i32(0), i32(0), one), "tokens must be"),
    ]
    for args, message in cases:
        with pytest.raises(ValueError, match=message):
            core.forward_batch(*args)
    m.close()


def test_parallel_is_checked() -> None:
    with pytest.raises(EngineError, match="parallel"):
        _load("bitnet-b1.58", "auto", 0)


# -- the scheduler ----------------------------------------------------------------------------
@pytest.mark.parametrize("n_seq", [1, 2, 4, 8])
def test_greedy_requests_get_their_tokens_alone(model8, n_seq: int) -> None:
    """n_seq greedy requests of different prompt lengths and answer lengths, joining at different
    steps (some while others decode, some long enough to be read in several chunks), answer exactly
    what each gets alone."""
    m = model8
    lengths = [3, 70, 12, 1, 33, 101, 7, 20][:n_seq]
    max_tokens = [24, 9, 30, 16, 5, 12, 20, 2][:n_seq]
    prompts = _prompts(m.n_vocab, lengths, seed=n_seq)
    alone = [_alone_text(m, p, max_tokens=k, temperature=0) for p, k in zip(prompts, max_tokens)]
    sched = BatchScheduler(m, step_tokens=16)
    join_at = [0, 0, 2, 3, 5, 5, 8, 13]
    reqs, step = {}, 0
    texts: dict[int, str] = {}
    while len(reqs) < n_seq or sched.busy:
        for i in range(n_seq):
            if i not in reqs and join_at[i] <= step:
                reqs[i] = sched.submit(prompts[i], max_tokens=max_tokens[i], temperature=0)
        for piece in sched.step():
            texts[piece.request.id] = texts.get(piece.request.id, "") + piece.text
        step += 1
    for i in range(n_seq):
        assert reqs[i].done and (reqs[i].tokens, texts.get(reqs[i].id, "")) == alone[i], i


def test_seeded_sampling_is_reproducible_per_request(model8) -> None:
    m = model8
    prompts = _prompts(m.n_vocab, [9, 30, 4], seed=5)
    opts = dict(max_tokens=20, temperature=0.9, top_k=0, top_p=1.0, min_p=0.0)
    alone = [_alone(m, p, seed=100 + i, **opts) for i, p in enumerate(prompts)]
    sched = BatchScheduler(m)
    reqs = [sched.submit(p, seed=100 + i, **opts) for i, p in enumerate(prompts)]
    list(sched.run())
    assert [r.tokens for r in reqs] == alone


def test_cancel_and_prefix_reuse(model8) -> None:
    """A cancelled request leaves at the next step without disturbing the others; a later
    request sharing a finished one's prompt reads only the rest of its own."""
    m = model8
    a, b = _prompts(m.n_vocab, [40, 25], seed=7)
    alone_b = _alone(m, b, max_tokens=15, temperature=0)
    sched = BatchScheduler(m, step_tokens=8)
    ra = sched.submit(a, max_tokens=50, temperature=0)
    rb = sched.submit(b, max_tokens=15, temperature=0)
    for _ in range(8):
        sched.step()
    ra.cancel()
    finished = [p for p in sched.step() if p.finished]
    assert [p.request for p in finished] == [ra] and ra.finish_reason == "cancelled"
    list(sched.run())
    assert rb.tokens == alone_b
    rc = sched.submit(b + [5, 6], max_tokens=15, temperature=0)
    list(sched.run())
    assert rc.result.cached_tokens == len(b)
    assert rc.tokens == _alone(m, b + [5, 6], max_tokens=15, temperature=0)


def test_stop_strings_and_finish_reasons(model8) -> None:
    m = model8
    (p,) = _prompts(m.n_vocab, [6], seed=9)
    full = m.detokenize(_alone(m, p, max_tokens=20, temperature=0))
    stop = full[5:8] if len(full) >= 8 else None
    sched = BatchScheduler(m)
    r = sched.submit(p, max_tokens=20, temperature=0, stop=stop)
    zero = sched.submit(p, max_tokens=0)
    text = "".join(piece.text for piece in sched.run() if piece.request is r)
    alone = m.generate(p, max_tokens=20, temperature=0, stop=stop)
    expected = "".join(alone)
    assert text == expected
    assert r.finish_reason == alone.result.finish_reason
    assert zero.done and zero.finish_reason == "length" and zero.tokens == []


def test_requests_beyond_the_slots_wait_and_context_is_per_slot(model8) -> None:
    m = model8
    prompts = _prompts(m.n_vocab, [5] * 10, seed=11)
    sched = BatchScheduler(m)
    reqs = [sched.submit(p, max_tokens=CTX, temperature=0) for p in prompts]
    sched.step()
    assert len(sched.active) == 8  # two wait for a slot
    list(sched.run())
    for r in reqs:  # each slot holds ctx_size positions: a run to the end stops at "length"
        assert r.done and (r.finish_reason == "stop" or len(r.prompt_ids) + len(r.tokens) == CTX)


def test_a_prompt_must_leave_room_for_one_answer_token(model8) -> None:
    """A prompt of ctx_size - 1 tokens is answered (one token: the context's last position); one
    of ctx_size tokens is refused with one message, by ``generate`` and the scheduler alike."""
    m = model8
    fits = _prompts(m.n_vocab, [CTX - 1], seed=13)[0]
    alone = m.generate(fits, max_tokens=5, temperature=0)
    list(alone)
    sched = BatchScheduler(m)
    batched = sched.submit(fits, max_tokens=5, temperature=0)
    list(sched.run())
    for result in (alone.result, batched):
        assert (result.finish_reason, len(result.tokens)) in {("length", 1), ("stop", 0)}
    message = (rf"^the prompt has {CTX} tokens, but the model's context holds {CTX} and the answer needs at "
               r"least one: shorten the prompt or use a larger --ctx-size$")
    with pytest.raises(EngineError, match=message):
        m.generate(fits + [1], max_tokens=1)
    with pytest.raises(EngineError, match=message):
        sched.submit(fits + [1], max_tokens=1)


def test_clear_errors(model8) -> None:
    m = model8
    sched = BatchScheduler(m)
    with pytest.raises(EngineError, match="context holds"):
        sched.submit([1] * (CTX + 1))
    with pytest.raises(EngineError, match="empty prompt"):
        sched.submit([])
    with pytest.raises(EngineError, match="top_p"):
        sched.submit([1, 2], top_p=0)
    r = sched.submit([1, 2, 3], max_tokens=30, temperature=0)
    sched.step()
    with pytest.raises(EngineError, match="another thread"):  # the scheduler holds the model
        list(m.generate([1, 2], max_tokens=2))
    list(sched.run())
    assert r.done
    list(m.generate([1, 2], max_tokens=2))  # handed back once idle


BAD_SAMPLING = [dict(temperature=-1), dict(top_p=2), dict(top_p=0), dict(min_p=1.0), dict(top_k=-1),
                dict(repeat_penalty=0)]


@pytest.mark.parametrize("bad", BAD_SAMPLING, ids=lambda b: "-".join(f"{k}={v}" for k, v in b.items()))
def test_bad_sampling_is_the_same_error_alone_and_batched(bad) -> None:
    """``generate`` and ``BatchScheduler.submit`` refuse the same values with the same EngineError
    (the engine's one rule, ``SamplingParams``), before anything runs."""
    m = _load("bitnet-b1.58", "auto", 2)
    with pytest.raises(EngineError) as alone:
        m.generate([1, 2], max_tokens=2, **bad)
    with pytest.raises(EngineError) as batched:
        BatchScheduler(m).submit([1, 2], max_tokens=2, **bad)
    assert str(alone.value) == str(batched.value) and next(iter(bad)) in str(alone.value)
    m.close()


@pytest.mark.parametrize("path", ["generate", "scheduler", "by-hand"])
def test_every_path_remembers_a_chat_answer_once(path: str) -> None:
    """The ids of an answer go to the chat format's memory once, at the end of its Decoding,
    whoever runs it (``generate``, the scheduler, a caller pushing logits itself): a next turn
    holding the answer's text then gets these ids, the ones its KV cache holds."""
    from neuro_bitnet.engine.sampling import SamplingParams

    m = _load("bitnet-b1.58", "auto", 2)
    calls: list[list[int]] = []
    real = m.chat_prompt.remember
    m.chat_prompt.remember = lambda ids: (calls.append(list(ids)), real(ids))
    turn_1 = [{"role": "user", "content": "Where?"}]
    prompt = m.chat_prompt_ids(turn_1)
    if path == "generate":
        answer = m.generate(prompt, max_tokens=6, temperature=0)
        "".join(answer)
        ids = answer.result.tokens
    elif path == "scheduler":
        sched = BatchScheduler(m)
        req = sched.submit(prompt, max_tokens=6, temperature=0)
        list(sched.run())
        ids = req.tokens
    else:  # an answer of one token per letter: not how its text tokenizes
        text = "the city of Paris"
        forced = [m.tokenize(c, add_bos=False)[0] for c in text]
        assert m.detokenize(forced) == text and forced != m.tokenize(text, add_bos=False)
        decoding = m.decoding(prompt, len(forced), SamplingParams(temperature=0))
        for token in forced:
            decoding.push(np.eye(m.n_vocab, dtype=np.float32)[token])
        assert decoding.done and decoding.result.finish_reason == "length"
        decoding.finish()
        ids = decoding.result.tokens
        turn_2 = [*turn_1, {"role": "assistant", "content": text}, {"role": "user", "content": "Sure?"}]
        assert m.chat_prompt_ids(turn_2)[: len(prompt) + len(forced)] == prompt + forced
    assert ids and calls == [list(ids)]
    m.close()


@pytest.mark.parametrize("path", ["generate", "scheduler"])
def test_max_tokens_zero_runs_nothing(model8, path: str) -> None:
    """An answer of no tokens does not read its prompt, alone or batched: the KV cache is left as
    it was (the next request of that prompt finds nothing of it cached)."""
    m = model8
    (p,) = _prompts(m.n_vocab, [7], seed=21)
    m.reset()
    if path == "generate":
        zero = m.generate(p, max_tokens=0)
        assert "".join(zero) == "" and zero.result.finish_reason == "length"
    else:
        sched = BatchScheduler(m)
        req = sched.submit(p, max_tokens=0)
        list(sched.run())
        assert req.done and req.finish_reason == "length"
    again = m.generate(p, max_tokens=1, temperature=0)
    "".join(again)
    assert again.result.cached_tokens == 0


def test_cancel_while_waiting_and_abort(model8) -> None:
    m = model8
    prompts = _prompts(m.n_vocab, [4] * 9, seed=13)
    sched = BatchScheduler(m)
    reqs = [sched.submit(p, max_tokens=50, temperature=0) for p in prompts]
    sched.step()
    reqs[8].cancel()  # waits for a slot: leaves at the next step all the same
    assert any(p.request is reqs[8] and p.finished for p in sched.step())
    assert reqs[8].finish_reason == "cancelled" and reqs[8].tokens == []
    late = sched.submit(prompts[0], max_tokens=5)
    pieces = sched.abort("shutting down")
    assert {p.request.id for p in pieces if p.finished} == {r.id for r in reqs[:8] + [late]}
    assert all(r.done and r.finish_reason == "error" and r.error == "shutting down" for r in reqs[:8] + [late])
    assert not sched.busy
    list(m.generate([1, 2], max_tokens=2))  # the model is free again


def test_constrained_requests_beside_plain_ones_get_their_answers_alone(model8) -> None:
    """Grammar masks are per request: JSON-schema answers batched with plain and other schema
    answers are exactly what each gets alone, and valid."""
    import json

    m = model8
    schemas = [
        {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 99}},
         "required": ["n"], "additionalProperties": False},
        None,
        {"type": "object", "properties": {"s": {"type": "string", "maxLength": 6}}, "required": ["s"],
         "additionalProperties": False},
        None,
    ]
    prompts = _prompts(m.n_vocab, [7, 30, 2, 15], seed=17)
    opts = dict(max_tokens=40, temperature=0)
    alone = [_alone_text(m, p, json_schema=s, **opts) for p, s in zip(prompts, schemas)]
    sched = BatchScheduler(m, step_tokens=16)
    reqs = [sched.submit(p, json_schema=s, **opts) for p, s in zip(prompts, schemas)]
    texts = {r.id: "" for r in reqs}
    for piece in sched.run():
        texts[piece.request.id] += piece.text
    for r, s, expected in zip(reqs, schemas, alone):
        assert (r.tokens, texts[r.id]) == expected
        if s is not None:
            assert r.finish_reason == "stop" and r.result.mask_seconds > 0
            json.loads(texts[r.id])


def test_default_parallel_follows_cores_and_memory() -> None:
    from neuro_bitnet.engine.parallel import default_parallel, kv_bytes_per_token

    m = _load("bitnet-b1.58", "auto", 1)
    hp, full_slot = m.hparams, kv_bytes_per_token(m.hparams) * 1000
    plenty = 1 << 50
    assert [default_parallel(hp, 1000, cores=c, available=plenty) for c in (1, 2, 8)] == [2, 4, 4]
    assert default_parallel(hp, 1000, cores=8, available=6 * full_slot) == 3  # half the memory: 3 full slots
    assert default_parallel(hp, 1000, cores=8, available=0) == 1
    m.close()
    auto = load_model(FIXTURES / "bitnet-b1.58" / "model.gguf", threads=1, ctx_size=CTX, parallel=None)
    assert auto.parallel == default_parallel(auto.hparams, CTX) and auto._core.n_seq == auto.parallel
    auto.close()


def test_an_explicit_parallel_must_fit_the_memory_the_default_uses() -> None:
    """The default's rule (full slots within half the available memory) refuses an explicit
    number past it, naming the memory needed and there; one slot always loads."""
    from neuro_bitnet.engine.parallel import check_parallel, default_parallel, kv_bytes_per_token

    m = _load("bitnet-b1.58", "auto", 1)
    hp, full_slot = m.hparams, kv_bytes_per_token(m.hparams) * 1000
    m.close()
    available = 6 * full_slot  # 3 full slots in half of it
    assert default_parallel(hp, 1000, cores=8, available=available) == 3
    check_parallel(hp, 1000, 3, available=available)
    check_parallel(hp, 1000, 1, available=0)
    with pytest.raises(EngineError) as err:
        check_parallel(hp, 1000, 4, available=available)
    message = str(err.value)
    assert "4 parallel slots of 1000 positions need" in message and "at most 3 fit" in message
    assert f"{4 * full_slot / 2**30:.1f} GiB" in message and f"{available / 2**30:.1f} GiB available" in message
    assert "\n" not in message
