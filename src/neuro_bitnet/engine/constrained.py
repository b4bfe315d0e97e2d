"""Grammar-constrained decoding: at every step, the tokens that would break a grammar get -inf.

Built on ``llguidance`` (the grammar engine of Guidance, also used by llama.cpp and vLLM): a
:class:`Grammar` is compiled once from a JSON schema or a Lark grammar; a
:class:`GrammarConstraint` follows one generation, masking logits before the ordinary sampling
(repetition penalty, top-k, top-p, temperature), so greedy decoding picks the best allowed token.
End-of-generation tokens are allowed only where the grammar is complete.

The vocabulary llguidance sees is each token's raw bytes (the same bytes the detokenizer emits),
so byte-level BPE (Llama-3) and SentencePiece (Llama-2, with ``<0xNN>`` byte tokens) both work.
JSON is generated compact (``", "`` and ``": "`` separators, no free whitespace): a random or
undertrained model cannot pad the output with endless spaces, and bounded schemas (maxLength,
enum, integer ranges, maxItems, ``additionalProperties: false``) always finish.
"""

from __future__ import annotations

import json
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import llguidance
    from llguidance._lib import JsonCompileOptions  # a TypedDict of the stubs only
import numpy as np

from neuro_bitnet.engine.tokenizer import Tokenizer
from neuro_bitnet.errors import EngineError

__all__ = ["Grammar", "GrammarConstraint", "GrammarError", "JSON_OPTIONS", "prepare_vocabulary"]

# Compact JSON: exactly one space after ',' and ':', none elsewhere.
JSON_OPTIONS: "JsonCompileOptions" = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}
_SPECIAL_PREFIX = b"\xff"  # llguidance's mark for special tokens (never valid UTF-8 text)


class GrammarError(EngineError):
    """A JSON schema or grammar is invalid or uses a feature the constrained sampler lacks."""

    exit_code = 2


class Grammar:
    """A checked grammar in llguidance's format; reusable by any number of generations."""

    def __init__(self, serialized: str, what: str) -> None:
        import llguidance  # imported when used: most answers have no grammar

        is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(serialized)
        if is_error:
            raise GrammarError(f"invalid {what}: {messages[0] if messages else 'rejected'}")
        self.serialized = serialized
        self.what = what

    @classmethod
    def json_schema(cls, schema: dict[str, Any] | bool | str) -> "Grammar":
        """JSON matching ``schema`` (a dict, ``True`` for any JSON value, or its JSON text).
        Unsupported keywords are errors that name them, never silently ignored."""
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except json.JSONDecodeError as exc:
                raise GrammarError(f"the JSON schema is not valid JSON ({exc})") from None
        if not isinstance(schema, (dict, bool)):
            raise GrammarError(f"a JSON schema must be an object or a boolean, not {type(schema).__name__}")
        if schema is False:
            raise GrammarError("the JSON schema false admits no value")
        if schema is True:
            schema = {}  # any JSON value
        try:
            import llguidance

            text = llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=JSON_OPTIONS)
        except (ValueError, TypeError) as exc:
            raise GrammarError(f"invalid JSON schema: {exc}") from None
        return cls(text, "JSON schema")

    @classmethod
    def json_object(cls) -> "Grammar":
        """Any JSON object (OpenAI's ``response_format: {"type": "json_object"}``)."""
        return cls.json_schema({"type": "object"})

    @classmethod
    def lark(cls, text: str) -> "Grammar":
        """A Lark grammar in llguidance's dialect (it may embed JSON schemas with ``%json``)."""
        import llguidance

        return cls(llguidance.LLMatcher.grammar_from_lark(text), "grammar")


class GrammarConstraint:
    """One generation's grammar state over one model's vocabulary."""

    def __init__(self, grammar: Grammar, tokenizer: Tokenizer, n_vocab: int) -> None:
        self.n_vocab = n_vocab
        import llguidance

        self._matcher = llguidance.LLMatcher(_ll_tokenizer(tokenizer, n_vocab), grammar.serialized, log_level=0)
        self._check()
        self.mask_seconds = 0.0  # total time spent computing masks

    def _check(self) -> None:
        if self._matcher.is_error():
            raise GrammarError(f"constrained decoding failed: {self._matcher.get_error()}")

    def mask(self, logits: np.ndarray) -> np.ndarray:
        """A copy of ``logits`` with every token the grammar forbids set to -inf."""
        start = time.perf_counter()
        bits = np.frombuffer(self._matcher.compute_bitmask(), dtype=np.uint8)
        self._check()
        allowed = np.unpackbits(bits, bitorder="little")[: self.n_vocab].astype(bool)
        out = np.array(logits, dtype=np.float32, copy=True)
        out[~allowed[: out.size]] = -np.inf
        self.mask_seconds += time.perf_counter() - start
        return out

    def accept(self, token: int) -> None:
        """Advance past a sampled token (one the mask allowed)."""
        if not self._matcher.consume_token(int(token)):
            raise GrammarError(f"constrained decoding failed: {self._matcher.get_error() or 'token rejected'}")

    @property
    def finished(self) -> bool:
        """The grammar is complete and admits nothing more (only end-of-generation)."""
        return self._matcher.is_stopped()

    @property
    def complete(self) -> bool:
        """The text so far is a whole sentence of the grammar (it may also continue)."""
        return self._matcher.is_accepting()


# -- the vocabulary as llguidance sees it, built once per tokenizer ------------------------------
_cache: "weakref.WeakKeyDictionary[Tokenizer, dict[int, llguidance.LLTokenizer]]" = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


class _Vocabulary:
    """What ``llguidance.TokenizerWrapper`` reads: token bytes, EOS/BOS, an encode function."""

    def __init__(self, tokenizer: Tokenizer, n_vocab: int) -> None:
        self._tokenizer = weakref.ref(tokenizer)  # the cache entry must not keep its key alive
        tokens = []
        for i in range(tokenizer.vocab_size):
            piece = tokenizer.token_bytes(i)
            tokens.append(_SPECIAL_PREFIX + piece if tokenizer.is_special(i) else piece)
        tokens += [b""] * (n_vocab - len(tokens))  # rows of the head past the tokenizer: never allowed
        self.tokens = tokens
        self.special_token_ids = [i for i in range(tokenizer.vocab_size) if tokenizer.is_special(i)]
        stops = sorted(tokenizer.stop_ids)
        self.eos_token_id = tokenizer.eot_id if tokenizer.eot_id is not None else (stops[0] if stops else 0)
        self.bos_token_id = tokenizer.bos_id

    def __call__(self, text: str | bytes) -> list[int]:
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        tokenizer = self._tokenizer()
        if tokenizer is None:
            raise EngineError("the tokenizer of this grammar is gone")
        return tokenizer.encode_continuation(text)


def prepare_vocabulary(tokenizer: Tokenizer, n_vocab: int) -> None:
    """Build now (once per tokenizer) what every :class:`GrammarConstraint` of this vocabulary
    needs, so that the first constrained generation does not pay for it where time matters."""
    _ll_tokenizer(tokenizer, n_vocab)


def _ll_tokenizer(tokenizer: Tokenizer, n_vocab: int) -> llguidance.LLTokenizer:
    """The llguidance tokenizer for ``tokenizer`` padded to ``n_vocab`` rows (cached; ~1 s to
    build for a 128k vocabulary)."""
    if n_vocab < tokenizer.vocab_size:
        raise EngineError(f"the model has {n_vocab} output rows but its tokenizer {tokenizer.vocab_size} tokens")
    with _cache_lock:
        by_size = _cache.setdefault(tokenizer, {})
        if n_vocab not in by_size:
            import llguidance

            vocab = _Vocabulary(tokenizer, n_vocab)
            stops = sorted(tokenizer.stop_ids) or [vocab.eos_token_id]
            by_size[n_vocab] = llguidance.LLTokenizer(llguidance.TokenizerWrapper(vocab), n_vocab=n_vocab,
                                                      eos_token=stops)
        return by_size[n_vocab]
