"""Tokenizer built from GGUF metadata, checked against the `tokenizers` reference."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path

import pytest
from tokenizers import Tokenizer as HFTokenizer

from neuro_bitnet.engine.tokenizer import (
    TOKEN_BYTE,
    TOKEN_CONTROL,
    StreamDecoder,
    Tokenizer,
    gguf_metadata_from_hf_tokenizer,
    llama3_tokenizer_json,
)
from neuro_bitnet.errors import EngineError

from support.spm_vocab import SPM_CORPUS
from support.spm_vocab import llama2_style_tokenizer_json as _llama2_style_tokenizer_json

TEXTS = [
    "Hello, world! How are you today?",
    "¿Cuál es la capital de España? Madrid, ¡claro! Año, niño, pingüino.",
    "Emoji: 🦙🔥 ❤️ 👨‍👩‍👧‍👦 🇪🇸 and text after",
    "中文测试：你好，世界。日本語のテキストです。한국어 문장.",
    "def fib(n):\n    if n < 2:\n        return n\n\treturn fib(n - 1) + fib(n - 2)\n",
    "spaces   between\t\ttabs\n\n\nnewlines   \r\n trailing   ",
    "1 12 123 1234 12345 1234567 3.14159 2024-05-01 1,000,000",
    "I'm sure you'll see they've LIVED here, DON'T you?",
    "System: be brief<|eot_id|>User: hi<|eot_id|>Assistant: ",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHola<|eot_id|>",
    "",
    " ",
    "\n",
    "a",
    "Ünïcödé ßtraße İstanbul ǅ",
]


@pytest.fixture(scope="module")
def llama3_path() -> Path:
    return llama3_tokenizer_json()


@pytest.fixture(scope="module")
def llama3_meta(llama3_path):
    return gguf_metadata_from_hf_tokenizer(llama3_path)


@pytest.fixture(scope="module")
def llama3(llama3_meta) -> Tokenizer:
    return Tokenizer.from_gguf_metadata(llama3_meta)


@pytest.fixture(scope="module")
def reference(llama3_path) -> HFTokenizer:
    return HFTokenizer.from_file(str(llama3_path))


# ------------------------------------------------------------------------------ Llama-3 BPE
def test_llama3_metadata_shape(llama3_meta):
    assert llama3_meta["tokenizer.ggml.model"] == "gpt2"
    assert llama3_meta["tokenizer.ggml.pre"] == "llama-bpe"
    tokens = llama3_meta["tokenizer.ggml.tokens"]
    assert len(tokens) == 128256
    assert len(llama3_meta["tokenizer.ggml.token_type"]) == len(tokens)
    assert len(llama3_meta["tokenizer.ggml.merges"]) == 280147
    assert tokens[llama3_meta["tokenizer.ggml.bos_token_id"]] == "<|begin_of_text|>"
    assert tokens[llama3_meta["tokenizer.ggml.eos_token_id"]] == "<|end_of_text|>"
    assert llama3_meta["tokenizer.ggml.add_bos_token"] is True


@pytest.mark.parametrize("text", TEXTS)
def test_llama3_ids_match_reference(llama3, reference, text):
    expected = reference.encode(text, add_special_tokens=False).ids
    assert llama3.encode(text, add_bos=False) == expected
    assert llama3.decode(expected) == text
    assert llama3.decode(expected) == reference.decode(expected, skip_special_tokens=False)


def test_llama3_random_text_matches_reference(llama3, reference):
    rng = random.Random(1234)
    alphabet = "abcXYZ áéñü 0123456789 \t\n\r.,;:'\"!?()[]{}<>|-_=+*/\\ 中文 🦙😀 \u00a0\u2003"
    for _ in range(200):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 60)))
        expected = reference.encode(text, add_special_tokens=False).ids
        assert llama3.encode(text, add_bos=False) == expected, repr(text)
        assert llama3.decode(expected) == text


def test_llama3_digits_split_in_groups_of_three(llama3):
    ids = llama3.encode("1234567", add_bos=False)
    assert [llama3.decode([i]) for i in ids] == ["123", "456", "7"]


def test_llama3_bos_and_special_tokens(llama3):
    ids = llama3.encode("Hi")
    assert ids[0] == llama3.bos_id
    # no double BOS when the text already starts with it
    assert llama3.encode("<|begin_of_text|>Hi") == ids
    inline = llama3.encode("a<|eot_id|>b", add_bos=False)
    assert llama3.eot_id in inline and len(inline) == 3
    plain = llama3.encode("a<|eot_id|>b", add_bos=False, parse_special=False)
    assert llama3.eot_id not in plain
    assert llama3.decode(plain) == "a<|eot_id|>b"
    assert llama3.decode(inline, skip_special=True) == "ab"
    assert llama3.decode(inline) == "a<|eot_id|>b"


def test_llama3_parse_special_false_matches_reference(llama3, reference):
    reference.encode_special_tokens = True
    try:
        expected = [reference.encode(text, add_special_tokens=False).ids for text in TEXTS]
    finally:
        reference.encode_special_tokens = False
    assert [llama3.encode(text, add_bos=False, parse_special=False) for text in TEXTS] == expected


def test_lone_surrogates_become_replacement_characters(llama3):
    assert llama3.decode(llama3.encode("a\ud800b", add_bos=False)) == "a\ufffdb"
    with pytest.raises(TypeError):
        llama3.encode(b"bytes")  # type: ignore[arg-type]


def test_llama3_stop_ids_and_specials(llama3):
    text_of = {llama3.tokens[i] for i in llama3.stop_ids}
    assert text_of == {"<|eot_id|>", "<|end_of_text|>"}  # Llama-3.0 has no <|eom_id|>
    assert llama3.tokens[llama3.eot_id] == "<|eot_id|>"
    assert llama3.is_special(llama3.bos_id) and llama3.is_special(llama3.eot_id)
    assert not llama3.is_special(llama3.encode("hello", add_bos=False)[0])
    with pytest.raises(EngineError):
        llama3.decode([llama3.vocab_size])


def test_stream_decoder_reassembles_multibyte(llama3):
    text = "ok 🦙👨‍👩‍👧 中文 ¿qué?"
    ids = llama3.encode(text, add_bos=False)
    # at least one emoji is split over several byte tokens
    assert any(
        piece and not _is_utf8(llama3.token_bytes(i)) for i in ids for piece in [llama3.token_bytes(i)]
    )
    stream = StreamDecoder(llama3)
    chunks = [stream.push(i) for i in ids] + [stream.flush()]
    assert "".join(chunks) == text
    assert all("\ufffd" not in c for c in chunks)


def test_stream_decoder_hides_control_tokens_by_default(llama3):
    ids = llama3.encode("Hi<|eot_id|>", add_bos=True)
    assert "".join(StreamDecoder(llama3).push(i) for i in ids) == "Hi"
    shown = StreamDecoder(llama3, skip_special=False)
    assert "".join(shown.push(i) for i in ids) == "<|begin_of_text|>Hi<|eot_id|>"


def test_stream_decoder_flush_replaces_incomplete_tail(llama3):
    ids = llama3.encode("🦙", add_bos=False)
    assert len(ids) > 1
    stream = StreamDecoder(llama3)
    assert stream.push(ids[0]) == ""
    assert stream.flush() == "\ufffd"


def test_encode_is_thread_safe(llama3):
    errors = []

    def work(parse_special: bool) -> None:
        for _ in range(50):
            ids = llama3.encode("x<|eot_id|>y", add_bos=False, parse_special=parse_special)
            if (llama3.eot_id in ids) != parse_special:
                errors.append(parse_special)

    threads = [threading.Thread(target=work, args=(flag,)) for flag in (True, False, True, False)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


# ------------------------------------------------------------------------- small vocab
@pytest.fixture(scope="module")
def small_meta(llama3_path) -> dict:
    return gguf_metadata_from_hf_tokenizer(llama3_path, vocab_limit=1000, chat_template="{{ x }}")


@pytest.fixture(scope="module")
def small(small_meta) -> Tokenizer:
    return Tokenizer.from_gguf_metadata(small_meta)


def test_vocab_limit_builds_a_tiny_real_tokenizer(small_meta, llama3_meta, small):
    meta = small_meta
    assert meta["tokenizer.chat_template"] == "{{ x }}"
    assert len(meta["tokenizer.ggml.tokens"]) == 1000 + 256
    kept = set(meta["tokenizer.ggml.tokens"][:1000])
    full_merges = llama3_meta["tokenizer.ggml.merges"]
    # Llama-3 token ids are not exactly merge ranks: keep, in order, the merges among kept tokens
    expected = [m for m in full_merges if {*m.split(" "), m.replace(" ", "")} <= kept]
    assert meta["tokenizer.ggml.merges"] == expected
    assert len(expected) > 500
    assert small.vocab_size == 1256
    assert small.tokens[1000] == "<|begin_of_text|>" and small.bos_id == 1000
    assert small.tokens[small.eot_id] == "<|eot_id|>" and small.eot_id == 1009
    for text in TEXTS:
        ids = small.encode(text, add_bos=False)
        assert all(0 <= i < small.vocab_size for i in ids)
        assert small.decode(ids) == text
    assert small.encode("x<|eot_id|>", add_bos=True) == [1000, small.encode("x", add_bos=False)[0], 1009]


def test_vocab_limit_matches_full_tokenizer_on_common_words(llama3, small):
    # the first merges are the same, so short frequent words get the same ids
    for word in [" the", " a", "in", " and"]:
        assert small.encode(word, add_bos=False) == llama3.encode(word, add_bos=False)


def test_vocab_limit_too_small_is_an_error(llama3_path):
    with pytest.raises(EngineError, match="byte tokens"):
        gguf_metadata_from_hf_tokenizer(llama3_path, vocab_limit=100)


# ------------------------------------------------------------------------ bad metadata
def _byte_vocab_meta(**extra) -> dict:
    """A minimal valid byte-level BPE: the 256 byte characters, 'ab' made by one merge."""
    from neuro_bitnet.engine.tokenizer import _BYTE_TO_CHAR

    tokens = list(_BYTE_TO_CHAR.values()) + ["ab", "<|eot_id|>"]
    meta = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": [1] * 257 + [3],
        "tokenizer.ggml.merges": ["a b"],
    }
    meta.update(extra)
    return meta


def test_minimal_byte_vocab_works():
    tok = Tokenizer.from_gguf_metadata(_byte_vocab_meta())
    ab = tok.tokens.index("ab")
    assert tok.encode("xab<|eot_id|>", add_bos=False) == [tok.tokens.index("x"), ab, 257]
    assert tok.stop_ids == {257} and tok.eot_id == 257 and tok.bos_id is None
    assert tok.encode("ab") == [ab]  # no BOS id: nothing to add
    assert tok.decode([ab, 257], skip_special=True) == "ab"


@pytest.mark.parametrize(
    "meta, message",
    [
        ({}, "tokenizer.ggml.model"),
        ({"tokenizer.ggml.model": "gpt2"}, "tokens"),
        ({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a", 5]}, "strings"),
        ({"tokenizer.ggml.model": "bert", "tokenizer.ggml.tokens": ["a"]}, "unsupported"),
        ({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a"]}, "merges"),
        (_byte_vocab_meta(**{"tokenizer.ggml.pre": "qwen2"}), "pre-tokenizer"),
        (_byte_vocab_meta(**{"tokenizer.ggml.merges": ["ab"]}), "malformed"),
        (_byte_vocab_meta(**{"tokenizer.ggml.merges": [7]}), "malformed"),
        (_byte_vocab_meta(**{"tokenizer.ggml.merges": ["b a"]}), "not in the vocab"),
        (_byte_vocab_meta(**{"tokenizer.ggml.tokens": [*_byte_vocab_meta()["tokenizer.ggml.tokens"], "qqb"],
                             "tokenizer.ggml.token_type": None,
                             "tokenizer.ggml.merges": ["qq b"]}), "invalid BPE"),
        (_byte_vocab_meta(**{"tokenizer.ggml.token_type": [1]}), "token_type"),
        (_byte_vocab_meta(**{"tokenizer.ggml.token_type": ["x"] * 258}), "integers"),
        ({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a", "b", "ab"],
          "tokenizer.ggml.merges": ["a b"]}, "byte tokens"),
        ({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["a"]}, "scores"),
        ({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["a"],
          "tokenizer.ggml.scores": [0.0, 1.0]}, "scores"),
        ({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["a"],
          "tokenizer.ggml.scores": ["high"]}, "numbers"),
    ],
)
def test_bad_metadata_raises_engine_error(meta, message):
    with pytest.raises(EngineError, match=message):
        Tokenizer.from_gguf_metadata(meta)


def test_out_of_range_special_ids_are_ignored():
    tok = Tokenizer.from_gguf_metadata(_byte_vocab_meta(**{
        "tokenizer.ggml.bos_token_id": 999999, "tokenizer.ggml.eos_token_id": -1,
    }))
    assert tok.bos_id is None and tok.eos_id is None


def test_bad_tokenizer_json(tmp_path):
    with pytest.raises(EngineError, match="not found"):
        gguf_metadata_from_hf_tokenizer(tmp_path / "missing.json")
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(EngineError, match="cannot read"):
        gguf_metadata_from_hf_tokenizer(bad)
    bad.write_text(json.dumps({"model": {"type": "WordPiece"}}))
    with pytest.raises(EngineError, match="WordPiece"):
        gguf_metadata_from_hf_tokenizer(bad)
    bad.write_text(json.dumps({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
                               "pre_tokenizer": {"type": "ByteLevel"}, "added_tokens": [{"x": 1}]}))
    with pytest.raises(EngineError, match="malformed"):
        gguf_metadata_from_hf_tokenizer(bad)
    with pytest.raises(EngineError, match="vocab_limit"):
        gguf_metadata_from_hf_tokenizer(bad, vocab_limit=0)


# -------------------------------------------------------------- SentencePiece (Llama-2 style)
SPM_TEXTS = [
    "the quick brown fox",
    "hello there general",
    "  leading and  double  spaces ",
    "¿Cuál es la capital?",
    "unseen letters: xyzq ZZZ ✓ 🦙 中文",
    "line\nbreak\ttab",
    "capital<s>the</s> end",
    "",
]


@pytest.fixture(scope="module")
def spm_pair(tmp_path_factory):
    path = _llama2_style_tokenizer_json(tmp_path_factory.mktemp("spm"))
    meta = gguf_metadata_from_hf_tokenizer(path)
    return Tokenizer.from_gguf_metadata(meta), HFTokenizer.from_file(str(path)), meta


def test_spm_metadata(spm_pair):
    tok, _, meta = spm_pair
    assert meta["tokenizer.ggml.model"] == "llama"
    assert "tokenizer.ggml.merges" not in meta
    assert len(meta["tokenizer.ggml.scores"]) == len(meta["tokenizer.ggml.tokens"])
    assert meta["tokenizer.ggml.token_type"][3] == TOKEN_BYTE
    assert meta["tokenizer.ggml.token_type"][1] == TOKEN_CONTROL
    assert tok.bos_id == 1 and tok.eos_id == 2 and tok.stop_ids == {2}


@pytest.mark.parametrize("text", SPM_TEXTS)
def test_spm_matches_reference(spm_pair, text):
    tok, ref, _ = spm_pair
    expected = ref.encode(text, add_special_tokens=False).ids
    assert tok.encode(text, add_bos=False) == expected
    assert tok.decode(expected, skip_special=True) == ref.decode(expected, skip_special_tokens=True)
    assert tok.decode(expected) == ref.decode(expected, skip_special_tokens=False)
    if "<s>" not in text:
        assert tok.decode(expected) == text


def test_spm_byte_fallback_and_stream(spm_pair):
    tok, _, _ = spm_pair
    ids = tok.encode("a 🦙 b")
    assert ids[0] == tok.bos_id
    assert sum(tok.token_types[i] == TOKEN_BYTE for i in ids) == 4
    stream = StreamDecoder(tok)
    assert "".join(stream.push(i) for i in ids) + stream.flush() == "a 🦙 b"


def _llama_cpp_spm(tok: Tokenizer, scores: list[float], text: str) -> list[int]:
    """llama.cpp's SPM algorithm, written plainly: repeatedly merge the adjacent pair whose
    joined text is a token with the highest score (leftmost on ties), then byte fallback."""
    vocab = {}
    for i, t in enumerate(tok.tokens):
        vocab.setdefault(t, i)
    symbols = list(("\u2581" + text).replace(" ", "\u2581")) if text else []
    while True:
        best = None
        for k in range(len(symbols) - 1):
            joined = symbols[k] + symbols[k + 1]
            if joined in vocab and (best is None or scores[vocab[joined]] > best[0]):
                best = (scores[vocab[joined]], k)
        if best is None:
            break
        k = best[1]
        symbols[k : k + 2] = [symbols[k] + symbols[k + 1]]
    ids = []
    for s in symbols:
        if s in vocab:
            ids.append(vocab[s])
        else:
            ids.extend(vocab[f"<0x{b:02X}>"] for b in s.encode("utf-8"))
    return ids


def test_spm_follows_llama_cpp_score_order(spm_pair):
    tok, _, meta = spm_pair
    scores = meta["tokenizer.ggml.scores"]
    rng = random.Random(7)
    words = " ".join(SPM_CORPUS).split() + ["zq", "✓", "the", "there", "ñ"]
    for _ in range(100):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(1, 8)))
        assert tok.encode(text, add_bos=False) == _llama_cpp_spm(tok, scores, text), text


# ----------------------------------------------------------------- through a real GGUF file
@pytest.mark.parametrize("which", ["llama3-1000", "spm"])
def test_metadata_survives_a_gguf_file(tmp_path, small_meta, small, spm_pair, which):
    import numpy as np

    from neuro_bitnet.engine.gguf import GGUFFile
    from neuro_bitnet.engine.gguf_writer import GGUFWriter

    if which == "spm":
        expected_tok, _, meta = spm_pair
    else:
        meta, expected_tok = small_meta, small
    writer = GGUFWriter(tmp_path / "tok.gguf", "bitnet-b1.58")
    for key, value in meta.items():
        writer.add(key, value)
    writer.add_tensor("output_norm.weight", np.ones(4, dtype=np.float32))
    path = writer.write()
    with GGUFFile(path) as gguf:
        loaded = dict(gguf.metadata)
    assert {k: loaded[k] for k in meta} == meta
    tok = Tokenizer.from_gguf_metadata(loaded)
    for text in TEXTS + SPM_TEXTS:
        assert tok.encode(text) == expected_tok.encode(text)


def test_spm_vocab_limit(tmp_path):
    path = _llama2_style_tokenizer_json(tmp_path)
    space_id = json.loads(path.read_text())["model"]["vocab"]["\u2581"]
    with pytest.raises(EngineError, match="space"):
        gguf_metadata_from_hf_tokenizer(path, vocab_limit=space_id)
    limit = space_id + 20
    tok = Tokenizer.from_gguf_metadata(gguf_metadata_from_hf_tokenizer(path, vocab_limit=limit))
    assert tok.vocab_size == limit and tok.bos_id == 1
    for text in SPM_TEXTS:
        ids = tok.encode(text, add_bos=False)
        assert all(0 <= i < limit for i in ids)
        if "<s>" not in text:
            assert tok.decode(ids) == text


@pytest.mark.parametrize("text", ['"the', " the quick", 'x"y <s>', "ñ✓"])
def test_spm_continuation_has_no_space_prefix(spm_pair, text):
    tok, _, _ = spm_pair
    ids = tok.encode_continuation(text)
    assert b"".join(tok.token_bytes(i) for i in ids) == text.encode("utf-8")


# ------------------------------------------------------------- tiktoken fast path (bpe_fast)
@pytest.fixture(scope="module")
def llama3_hf(llama3_meta) -> Tokenizer:
    """The same vocabulary through the `tokenizers` library (the fast path turned off)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("NEURO_BITNET_TOKENIZER", "tokenizers")
    try:
        return Tokenizer.from_gguf_metadata(llama3_meta)
    finally:
        mp.undo()


def test_llama3_uses_the_fast_encoder(llama3, llama3_hf):
    assert llama3.encoder_name == "tiktoken"
    assert llama3_hf.encoder_name == "tokenizers"


def _hard_texts() -> list[str]:
    """Runs (whitespace, digits, punctuation, letters, multi-byte) where several merges make the
    same token and the two BPE algorithms take different steps, plus random mixtures."""
    texts = []
    for n in list(range(1, 70)) + [100, 127, 128, 129, 255, 256, 300, 1000]:
        for unit in (" ", "\t", "\n", "\r\n", " \n", "  \t", "a", "ab", "0", "!", "-", "=", "é", "🦙",
                     "中", "\u00a0", "Ġ", "..."):
            texts.append(unit * n)
        texts.append("x" + " " * n + "y")
        texts.append("    " * (n % 17) + "def f(x):\n" + " " * n + "return x\n")
    rng = random.Random(99)
    alphabet = "aAeéz Z0129 \t\n\r\u00a0.,!?'\"-_=<>|()[]{}#@$%^&*~`中文日本🦙😀ßİǅ"
    for _ in range(1500):
        texts.append("".join(rng.choice(alphabet) for _ in range(rng.randint(1, 120))))
    texts.append((Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8"))
    return texts


def test_fast_encoder_equals_tokenizers_on_hard_texts(llama3, llama3_hf, reference):
    for text in _hard_texts():
        expected = llama3_hf.encode(text, add_bos=False)
        assert llama3.encode(text, add_bos=False) == expected, repr(text[:80])
        assert llama3.encode(text, add_bos=False, parse_special=False) == llama3_hf.encode(
            text, add_bos=False, parse_special=False
        ), repr(text[:80])
    sample = _hard_texts()[::25]
    assert [llama3.encode(t, add_bos=False) for t in sample] == [
        e.ids for e in reference.encode_batch(sample, add_special_tokens=False)
    ]


def test_python_path_equals_tiktoken(llama3_meta):
    """Texts in the alphabet the Python path takes give tiktoken's ids (the Encoding built here
    only for the comparison); texts outside it build the Encoding."""
    from neuro_bitnet.engine import bpe_fast

    encoder = Tokenizer.from_gguf_metadata(llama3_meta)._encoder
    assert isinstance(encoder, bpe_fast.TiktokenEncoder) and encoder._enc is None
    rng = random.Random(7)
    alphabet = sorted(bpe_fast._PYTHON_ALPHABET)
    words = ["the", " The", "'s", "'S", "'ll", "don't", "1234567", " \n\n", "\r\n", "\t", "   ",
             "<|eot_id|>", "<|begin_of_text|>", "Assistant: ", "ÀÉÎõü", "\xa0", "¿Qué?", "naïve"]
    texts = [t for t in _hard_texts() if bpe_fast._PYTHON_ALPHABET.issuperset(t)]
    for _ in range(3000):
        texts.append("".join(rng.choice(alphabet) if rng.random() < 0.6 else rng.choice(words)
                             for _ in range(rng.randint(1, 60))))
    encoding = encoder._encoding()
    for text in texts:
        assert encoder._encode_python(text, True) == encoding.encode(text, allowed_special="all"), repr(text)
        assert encoder._encode_python(text, False) == encoding.encode(text, disallowed_special=()), repr(text)

    fresh = Tokenizer.from_gguf_metadata(llama3_meta)._encoder
    fresh.encode("What is the capital of France?", True)
    assert fresh._enc is None  # no build for a plain text
    assert fresh.encode("🦙 llama", True) == encoding.encode("🦙 llama", allowed_special="all")
    assert fresh._enc is not None


def test_fast_encoder_recognises_control_tokens_like_tokenizers(llama3, llama3_hf):
    text = "<|begin_of_text|>a<|eot_id|> <|start_header_id|>x<|end_header_id|>\n\n<|eot_id|><|eot_id|>"
    for parse_special in (True, False):
        assert llama3.encode(text, add_bos=False, parse_special=parse_special) == llama3_hf.encode(
            text, add_bos=False, parse_special=parse_special
        )


def test_merges_out_of_id_order_keep_tokenizers():
    # "b c" is listed first but makes id 257 > "ab" (256): tiktoken would merge "ab" first
    from neuro_bitnet.engine.tokenizer import _BYTE_TO_CHAR

    tokens = list(_BYTE_TO_CHAR.values()) + ["ab", "bc"]
    meta = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": [1] * 258,
        "tokenizer.ggml.merges": ["b c", "a b"],
    }
    tok = Tokenizer.from_gguf_metadata(meta)
    assert tok.encoder_name == "tokenizers"
    assert tok.encode("abc", add_bos=False) == [tokens.index("a"), 257]


def test_a_missing_merge_keeps_tokenizers():
    # "abc" can be split as "ab"+"c" (listed) and "a"+"bc" (not listed): not tiktoken-shaped
    from neuro_bitnet.engine.tokenizer import _BYTE_TO_CHAR

    tokens = list(_BYTE_TO_CHAR.values()) + ["ab", "bc", "abc"]
    meta = {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": [1] * 259,
        "tokenizer.ggml.merges": ["a b", "b c", "ab c"],
    }
    assert Tokenizer.from_gguf_metadata(meta).encoder_name == "tokenizers"
    meta["tokenizer.ggml.merges"] = ["a b", "b c", "ab c", "a bc"]
    assert Tokenizer.from_gguf_metadata(meta).encoder_name == "tiktoken"


def test_the_verdict_is_cached_and_a_corrupt_one_is_checked_again(tmp_path, monkeypatch):
    from neuro_bitnet.engine import bpe_fast

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    meta = _byte_vocab_meta()
    calls = []
    real = bpe_fast.equivalent
    monkeypatch.setattr(bpe_fast, "equivalent", lambda *a: calls.append(1) or real(*a))
    assert Tokenizer.from_gguf_metadata(meta).encoder_name == "tiktoken"
    (verdict,) = list(bpe_fast.cache_dir().iterdir())
    assert verdict.read_bytes() == b"equivalent\n" and len(calls) == 1
    assert Tokenizer.from_gguf_metadata(meta).encoder_name == "tiktoken"
    assert len(calls) == 1  # read from the cache
    verdict.write_bytes(b"\x00garbage")
    assert Tokenizer.from_gguf_metadata(meta).encoder_name == "tiktoken"
    assert len(calls) == 2 and verdict.read_bytes() == b"equivalent\n"
    # a different vocabulary has its own verdict
    Tokenizer.from_gguf_metadata(_byte_vocab_meta(**{"tokenizer.ggml.merges": []}))
    assert len(list(bpe_fast.cache_dir().iterdir())) == 2


def test_an_unwritable_cache_still_works(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    tok = Tokenizer.from_gguf_metadata(_byte_vocab_meta())
    assert tok.encoder_name == "tiktoken"
    assert tok.encode("xab", add_bos=False) == [tok.tokens.index("x"), tok.tokens.index("ab")]
