"""Grammar-constrained decoding on the tiny random fixtures.

The weights are random: without the constrained sampler these models never write valid JSON, so
every output checked here against its schema (with ``jsonschema``) is the sampler's doing.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from neuro_bitnet.engine import load_model
from neuro_bitnet.engine.constrained import Grammar, GrammarConstraint, GrammarError
from neuro_bitnet.engine.gguf import GGUFFile
from neuro_bitnet.engine.tokenizer import Tokenizer, gguf_metadata_from_hf_tokenizer

from support.gguf_edit import rewrite_gguf
from support.spm_vocab import llama2_style_tokenizer_json

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "role": {"enum": ["admin", "user", "guest"]},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}, "maxItems": 3},
        "active": {"type": "boolean"},
    },
    "required": ["name", "age", "role", "tags", "active"],
    "additionalProperties": False,
}
SCHEMAS = [
    PERSON,
    {"type": "array", "items": {"type": "integer", "minimum": -50, "maximum": 50}, "minItems": 1, "maxItems": 4},
    {"enum": ["red", "green", "blue"]},
    {"type": "object",
     "properties": {"point": {"type": "object",
                              "properties": {"x": {"type": "integer", "minimum": -3, "maximum": 1000},
                                             "y": {"type": "integer", "minimum": 1, "maximum": 9}},
                              "required": ["x", "y"], "additionalProperties": False},
                    "label": {"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 4}]}},
     "required": ["point", "label"], "additionalProperties": False},
    {"type": "string", "pattern": "^[a-f0-9]{8}$"},
]
MAX_TOKENS = 120  # generous for the schemas above, whose outputs are short whatever the model


@pytest.fixture(scope="module")
def model():
    with load_model(FIXTURES / "bitnet-b1.58" / "model.gguf", threads=1, ctx_size=256) as m:
        yield m


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory):
    """The `bitnet` fixture with a Llama-2-style SentencePiece vocabulary instead of Llama-3's."""
    tmp = tmp_path_factory.mktemp("spm")
    meta = gguf_metadata_from_hf_tokenizer(llama2_style_tokenizer_json(tmp))
    src = FIXTURES / "bitnet" / "model.gguf"
    with GGUFFile(src) as f:
        old = {k: v for k, v in f.metadata.items() if k.startswith("tokenizer.")}
        arch = f.metadata["general.architecture"]
        rows = f.tensors["token_embd.weight"].shape[0]
    assert len(meta["tokenizer.ggml.tokens"]) <= rows
    dst = rewrite_gguf(src, tmp / "spm.gguf", drop_keys=tuple(old),
                       set_keys={**meta, f"{arch}.vocab_size": rows})
    with load_model(dst, threads=1, ctx_size=256) as m:
        assert m.tokenizer.kind == "llama"
        yield m


def _run(m, schema, **kwargs) -> str:
    answer = m.generate("The answer:", max_tokens=MAX_TOKENS, json_schema=schema, **kwargs)
    out = "".join(answer)
    assert answer.result.finish_reason == "stop", (out, answer.result)
    return out


@pytest.mark.parametrize("index", range(len(SCHEMAS)))
def test_greedy_output_matches_schema(model, index):
    schema = SCHEMAS[index]
    out = _run(model, schema, temperature=0)
    jsonschema.validate(json.loads(out), schema)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("index", range(len(SCHEMAS)))
def test_sampled_output_matches_schema(model, index, seed):
    schema = SCHEMAS[index]
    out = _run(model, schema, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=seed)
    jsonschema.validate(json.loads(out), schema)


def test_seeded_sampling_is_reproducible(model):
    kwargs = dict(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=7)
    assert _run(model, PERSON, **kwargs) == _run(model, PERSON, **kwargs)


def test_unconstrained_random_model_does_not_write_json(model):
    """The control experiment: the same model without the sampler's help."""
    out = "".join(model.generate("The answer:", max_tokens=40, temperature=0))
    with pytest.raises(ValueError):
        jsonschema.validate(json.loads(out), PERSON)


def test_chat_takes_a_schema(model):
    out = "".join(model.chat([{"role": "user", "content": "Who are you?"}], max_tokens=MAX_TOKENS,
                             temperature=0, json_schema=PERSON))
    jsonschema.validate(json.loads(out), PERSON)


def test_llama_fixture_with_untied_head(tmp_path):
    with load_model(FIXTURES / "llama" / "model.gguf", threads=1, ctx_size=256) as m:
        for seed in (None, 5):
            out = _run(m, PERSON, temperature=0 if seed is None else 0.9, seed=seed)
            jsonschema.validate(json.loads(out), PERSON)


@pytest.mark.parametrize("index", range(len(SCHEMAS)))
def test_sentencepiece_vocabulary(spm_model, index):
    schema = SCHEMAS[index]
    for seed in (None, 4):
        out = _run(spm_model, schema, temperature=0 if seed is None else 1.0, seed=seed)
        jsonschema.validate(json.loads(out), schema)


def test_json_object_mode(model):
    """Any JSON object: unbounded, so a random model may run out of tokens; what it wrote is an
    object's beginning, and whenever it finished it is an object."""
    finished = 0
    for seed in range(6):
        answer = model.generate("x", max_tokens=60, temperature=1.0, seed=seed, json_schema={"type": "object"})
        out = "".join(answer)
        assert out.startswith("{")
        if answer.result.finish_reason == "stop":
            assert isinstance(json.loads(out), dict)
            finished += 1
    grammar = Grammar.json_object()
    constraint = GrammarConstraint(grammar, model.tokenizer, model.n_vocab)
    for token in model.tokenize('{"a": [1, {"b": null}]}', add_bos=False):
        assert np.isfinite(constraint.mask(np.zeros(model.n_vocab, np.float32))[token])
        constraint.accept(token)
    assert constraint.complete


def test_end_of_generation_only_when_complete(model):
    constraint = GrammarConstraint(Grammar.json_schema(PERSON), model.tokenizer, model.n_vocab)
    masked = constraint.mask(np.zeros(model.n_vocab, np.float32))
    assert all(masked[i] == -np.inf for i in model.tokenizer.stop_ids)
    assert not constraint.complete and not constraint.finished
    allowed = [i for i in range(model.n_vocab) if np.isfinite(masked[i])]
    assert allowed and all(model.tokenizer.token_bytes(i).startswith(b"{") for i in allowed)


@pytest.mark.parametrize("schema, message", [
    ({"type": "strin"}, "strin"),
    ({"type": "string", "format": "no-such-format"}, "no-such-format"),
    ({"type": "object", "properties": {"a": {"type": "array", "uniqueItems": True}}}, "uniqueItems"),
    ({"not": {"type": "string"}}, "Unimplemented keys.*not"),
    ('{"type": ', "not valid JSON"),
    ([1, 2], "object or a boolean"),
    (False, "admits no value"),
])
def test_invalid_schema_is_a_clear_error(model, schema, message):
    with pytest.raises(GrammarError, match=message):
        model.generate("x", json_schema=schema)


def test_tokenizer_without_model_rows_beyond_vocab(tmp_path):
    """Rows of the head past the tokenizer's vocabulary are never allowed."""
    tok = Tokenizer.from_gguf_metadata(gguf_metadata_from_hf_tokenizer(llama2_style_tokenizer_json(tmp_path)))
    constraint = GrammarConstraint(Grammar.json_schema({"type": "integer"}), tok, tok.vocab_size + 10)
    masked = constraint.mask(np.zeros(tok.vocab_size + 10, np.float32))
    assert np.all(masked[tok.vocab_size:] == -np.inf)
    assert np.isfinite(masked).any()


def test_schema_true_is_any_json_value(model):
    constraint = GrammarConstraint(Grammar.json_schema(True), model.tokenizer, model.n_vocab)
    for token in model.tokenize('[1, "a", null]', add_bos=False):
        constraint.accept(token)
    assert constraint.complete
