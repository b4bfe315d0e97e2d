"""A fast encoder for Llama-3 style byte-level BPE: ``tiktoken``, used only where it is proven equal.

Building the ``tokenizers`` BPE for a 128k-token vocabulary with 280k merges takes about a second;
``tiktoken`` builds the same vocabulary in a fraction of that. The two algorithms differ: a
``tokenizers`` BPE merges the listed pair with the lowest merge rank; ``tiktoken`` merges the
adjacent pair whose joined bytes form the token with the lowest id (leftmost on ties). Llama-3's
vocabulary was made for ``tiktoken`` (Meta's reference tokenizer) and its merges list was derived
from it; :func:`equivalent` checks that a vocabulary has that shape:

1. only normal and control tokens, no duplicated text, normal tokens in the byte-level alphabet;
2. every merge joins two normal tokens into a normal token, and merges are listed in the order of
   the ids they make (so "lowest merge rank" and "lowest id" pick the same result);
3. every split of a normal token into two normal tokens is a listed merge (so ``tiktoken`` has no
   pair to merge that ``tokenizers`` lacks);
4. control tokens contain no whitespace, none contains another, and none is one piece of the split
   regex (so plain text never becomes a control token).

What the check does not prove: where several merges make the same token (``Ġ ĠĠĠ``, ``ĠĠ ĠĠ``),
the two may take different intermediate steps; for Llama-3's vocabulary the ids are the same
(tests/engine/test_tokenizer.py compares both with the Hugging Face reference on fixed, random and
whitespace-run texts). ``NEURO_BITNET_TOKENIZER=tokenizers`` turns this path off.

The check costs a few tenths of a second, so its verdict is kept in the cache directory under a
hash of the vocabulary (a corrupt or unreadable verdict is checked again). Anything else, or
``tiktoken`` missing, falls back to ``tokenizers``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import sys
import tempfile
import threading
from collections.abc import Sequence
from itertools import accumulate
from pathlib import Path

from neuro_bitnet.config import setting

CACHE_VERSION = "bpe-fast-2"  # part of every verdict's key: change it when equivalent() changes
_VERDICTS = {b"equivalent\n": True, b"different\n": False}


def cache_dir() -> Path:
    """Where verdicts are kept: ``tokenizers`` under the platform cache dir."""
    import platformdirs

    return Path(platformdirs.user_cache_dir("neuro-bitnet")) / "tokenizers"


# Characters on which Python's ``regex`` module and tiktoken's Rust regex split a text alike for
# the Llama-3 pattern: tab, newline, carriage return, printable ASCII and Latin-1 (no C0/C1
# controls, whose ``\s`` membership differs). Their Unicode classes have been fixed since 1.1.
_PYTHON_ALPHABET = frozenset("\t\n\r" + "".join(map(chr, range(0x20, 0x7F))) + "".join(map(chr, range(0xA0, 0x100))))
PYTHON_MAX_CHARS = 16384  # longer texts go to tiktoken (built once, then much faster per character)


class TiktokenEncoder:
    """tiktoken's BPE over a vocabulary: split by the pre-tokenizer regex, then in each piece
    merge the adjacent pair whose joined bytes form the lowest id (leftmost on ties).

    Building a ``tiktoken`` Encoding for 128k tokens takes a few tenths of a second, which a cold
    ``neuro ask`` would wait for before its first token. So texts of up to PYTHON_MAX_CHARS
    characters of _PYTHON_ALPHABET (where Python's ``regex`` splits as tiktoken does) are
    encoded here, in Python, by the same algorithm over the token texts; any other text builds
    the Encoding on first use (tests/engine/test_tokenizer.py compares the two). Thread-safe;
    tiktoken releases the GIL while it works.
    """

    name = "tiktoken"

    def __init__(self, normal: dict[str, int], specials: dict[str, int], pattern: str) -> None:
        import regex

        from neuro_bitnet.engine import tokenizer as tk

        self._normal = normal  # byte-level token text -> id
        self._specials = specials
        self._pattern = pattern
        self._split = regex.compile(pattern)
        # Where a control token may start (compiling an alternation of 256 of them takes a tenth
        # of a second); none contains another, so at most one matches at a position.
        starts = {t[0] for t in specials if t}
        self._special_start = re.compile("[" + "".join(map(re.escape, starts)) + "]" if starts else "(?!)")
        self._special_lengths = sorted({len(t) for t in specials}, reverse=True)
        self._byte_chars = {b: ord(c) for b, c in tk._BYTE_TO_CHAR.items()}  # latin-1 char -> byte-level char
        self._enc = None
        self._lock = threading.Lock()

    def encode(self, text: str, parse_special: bool) -> list[int]:
        if len(text) <= PYTHON_MAX_CHARS and _PYTHON_ALPHABET.issuperset(text):
            return self._encode_python(text, parse_special)
        enc = self._encoding()
        if parse_special:
            return enc.encode(text, allowed_special="all")
        return enc.encode(text, disallowed_special=())

    def _encoding(self):
        with self._lock:
            if self._enc is None:
                import tiktoken

                normal = sorted(self._normal.items(), key=lambda item: item[1])
                ranks = dict(zip(_byte_texts([text for text, _ in normal]), [i for _, i in normal]))
                self._enc = tiktoken.Encoding("gguf-llama3", pat_str=self._pattern, mergeable_ranks=ranks,
                                              special_tokens=self._specials)
            return self._enc

    def _encode_python(self, text: str, parse_special: bool) -> list[int]:
        if not parse_special or not self._specials:
            return self._encode_ordinary(text)
        ids: list[int] = []
        start = 0
        for match in self._special_start.finditer(text):
            at = match.start()
            if at < start:
                continue
            special = next((text[at:at + n] for n in self._special_lengths if text[at:at + n] in self._specials), None)
            if special is not None:
                ids += self._encode_ordinary(text[start:at])
                ids.append(self._specials[special])
                start = at + len(special)
        return ids + self._encode_ordinary(text[start:])

    def _encode_ordinary(self, text: str) -> list[int]:
        ids: list[int] = []
        normal = self._normal
        for piece in self._split.findall(text):
            chars = piece.encode("utf-8").decode("latin-1").translate(self._byte_chars)
            token = normal.get(chars)
            if token is not None:
                ids.append(token)
            else:
                ids += self._merge(chars)
        return ids

    def _merge(self, chars: str) -> list[int]:
        """tiktoken's byte_pair_merge on one piece (its characters are byte-level bytes)."""
        normal = self._normal
        parts = list(chars)
        none = sys.maxsize  # above every id
        while len(parts) > 1:
            best, at = none, -1
            for i in range(len(parts) - 1):
                rank = normal.get(parts[i] + parts[i + 1], none)
                if rank < best:
                    best, at = rank, i
            if at < 0:
                break
            parts[at:at + 2] = [parts[at] + parts[at + 1]]
        return [normal[part] for part in parts]


def build(tokens: list[str], types: list[int], merges: Sequence, pre: str) -> TiktokenEncoder | None:
    """A tiktoken encoder equal to the ``tokenizers`` BPE of this vocabulary, or None."""
    from neuro_bitnet.engine import tokenizer as tk

    if pre not in tk._LLAMA3_PRE_NAMES or setting("tokenizer") == "tokenizers":
        return None
    if importlib.util.find_spec("tiktoken") is None:
        return None
    if not set(map(type, merges)) <= {str}:
        return None
    key = _vocab_key(tokens, types, merges, pre)
    verdict = _read_verdict(key)
    if verdict is None:
        verdict = equivalent(tokens, types, merges)
        _write_verdict(key, verdict)
    if not verdict:
        return None
    normal = dict(zip(tokens, range(len(tokens))))  # texts are unique (checked by equivalent())
    specials = {tokens[i]: i for i, kind in enumerate(types) if kind != tk.TOKEN_NORMAL}
    for text in specials:
        del normal[text]
    return TiktokenEncoder(normal, specials, tk.LLAMA3_SPLIT_REGEX)


def _byte_texts(texts: list[str]) -> list[bytes]:
    """The bytes of byte-level BPE token texts (all in the alphabet), in bulk C-level calls."""
    from neuro_bitnet.engine import tokenizer as tk

    table = {ord(c): b for c, b in tk._CHAR_TO_BYTE.items()}
    data = "".join(texts).translate(table).encode("latin-1")  # one char per byte
    ends = list(accumulate(map(len, texts)))
    return list(map(data.__getitem__, map(slice, [0, *ends[:-1]], ends)))


def equivalent(tokens: list[str], types: list[int], merges: Sequence[str]) -> bool:
    """True when tiktoken over these tokens gives the ids of the ``tokenizers`` BPE (see above)."""
    from tokenizers import Regex, pre_tokenizers

    from neuro_bitnet.engine import tokenizer as tk

    if len(set(tokens)) != len(tokens):
        return False
    alphabet = set(tk._CHAR_TO_BYTE)
    normal: dict[str, int] = {}
    control: list[str] = []
    for i, (text, kind) in enumerate(zip(tokens, types)):
        if kind == tk.TOKEN_NORMAL:
            if not text or not alphabet.issuperset(text):
                return False
            normal[text] = i
        elif kind == tk.TOKEN_CONTROL:
            control.append(text)
        else:
            return False
    if not alphabet.issubset(normal):
        return False
    # 4: control tokens
    split = pre_tokenizers.Split(Regex(tk.LLAMA3_SPLIT_REGEX), behavior="isolated", invert=False)
    for text in control:
        if not text or any(c.isspace() for c in text) or len(split.pre_tokenize_str(text)) < 2:
            return False
        if any(text != other and text in other for other in control):
            return False
    # 2: merges join normal tokens, listed in the order of the ids they make
    merge_set: set[tuple[str, str]] = set()
    last = -1
    for merge in merges:
        left, sep, right = merge.partition(" ")
        if not sep or not left or not right:
            return False
        made = normal.get(left + right)
        a, b = normal.get(left), normal.get(right)
        if made is None or a is None or b is None or made < last:
            return False
        last = made
        merge_set.add((left, right))
    # 3: every split into two normal tokens is a merge
    for text in normal:
        for cut in range(1, len(text)):
            left, right = text[:cut], text[cut:]
            if left in normal and right in normal and (left, right) not in merge_set:
                return False
    return True


def _vocab_key(tokens: list[str], types: list[int], merges: Sequence[str], pre: str) -> str:
    h = hashlib.sha256(f"{CACHE_VERSION}\0{pre}\0{len(tokens)}\0{len(merges)}\0".encode())
    h.update("\0".join(tokens).encode("utf-8", "surrogatepass"))
    h.update(bytes(types))  # token types are 1..6 (see tokenizer._read_token_types)
    h.update("\0".join(merges).encode("utf-8", "surrogatepass"))
    return h.hexdigest()


def _read_verdict(key: str) -> bool | None:
    try:
        return _VERDICTS.get((cache_dir() / key).read_bytes())
    except OSError:
        return None


def _write_verdict(key: str, verdict: bool) -> None:
    """Best effort: a cache that cannot be written only means checking again next time."""
    try:
        folder = cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".verdict-")
        with os.fdopen(fd, "wb") as f:
            f.write(b"equivalent\n" if verdict else b"different\n")
        os.replace(tmp, folder / key)
    except OSError:
        pass
