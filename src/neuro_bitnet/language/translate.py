"""Translation done by the language model itself: the one policy the CLI, the daemon and MCP use.

A text is translated block by block (paragraphs separated by blank lines; long paragraphs are
split at line or sentence ends), so a whole document keeps every paragraph and its layout. From
each translation only what small models add around it is removed: a leading label
("Translation:", "Here is the translation:"), quotes wrapped around the whole text, and trailing
"Note: ..." lines. Code blocks and blocks without letters are kept as they are.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Iterator, Protocol

from neuro_bitnet.engine.options import GenerationOptions
from neuro_bitnet.errors import ConfigError
from neuro_bitnet.language.detect import SUPPORTED_LANGUAGES, Detection, detect_language, language_name


class ChatModel(Protocol):
    """What translation needs of a model: a streamed chat reply (every backend is one)."""

    def chat(self, messages: list[dict[str, str]], options: GenerationOptions) -> Iterator[str]:
        """Stream the assistant's reply to ``messages`` as text pieces."""
        ...


_SYSTEM = "You are a precise translator. Reply with the translation only, without notes or quotes."
# The longest block sent in one request, in words (a small model translates short texts best,
# and the answer budget below stays well inside the context).
MAX_BLOCK_WORDS = 120
_QUOTES = {'"': '"', "'": "'", "«": "»", "“": "”", "„": "“"}
_LANGUAGE_WORDS = "|".join(re.escape(name) for name in SUPPORTED_LANGUAGES.values())
# "Translation:", "English translation:", "Here is the translation:", "Spanish:" ...
_LABEL = re.compile(
    rf"^\s*(?:here(?: is|'s) (?:the|my|your) )?(?:(?:{_LANGUAGE_WORDS}) )?"
    rf"(?:translation|translated text|{_LANGUAGE_WORDS})(?: version| text)?\s*:\s*",
    re.IGNORECASE,
)
_NOTE = re.compile(r"^\s*\(?\s*(?:note|notes|translator'?s note)\s*:", re.IGNORECASE)
_FENCE = re.compile(r"^\s*(```|~~~)")
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


def check_language(code: str) -> str:
    """A supported language code, lower-cased ("ES" -> "es"); ConfigError naming the choices."""
    normalized = code.strip().lower()
    if normalized not in SUPPORTED_LANGUAGES:
        choices = ", ".join(f"{c} ({n})" for c, n in SUPPORTED_LANGUAGES.items())
        raise ConfigError(f"unsupported language {code!r}; choose one of: {choices}")
    return normalized


def translation_messages(text: str, source: str, target: str) -> list[dict[str, str]]:
    """The chat messages that ask the model for a translation of one block."""
    request = (
        f"Translate this {language_name(source)} text into {language_name(target)}:\n\n{text.strip()}"
    )
    return [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": request}]


def clean_translation(raw: str) -> str:
    """Strip what small models add around a translation, keeping every line of it.

    Removed: a leading label, quotes around the whole text, trailing "Note:" lines, blank edges.
    """
    lines = raw.strip().splitlines()
    if lines:
        first = _LABEL.sub("", lines[0], count=1)
        lines = ([first] if first.strip() else []) + lines[1:]
    while lines and (not lines[-1].strip() or _NOTE.match(lines[-1])):
        lines.pop()
    while lines and not lines[0].strip():
        lines.pop(0)
    text = "\n".join(line.rstrip() for line in lines).strip()
    if len(text) >= 2 and _QUOTES.get(text[0]) == text[-1] and text.count(text[0]) <= 2:
        text = text[1:-1].strip()
    return text


def split_blocks(text: str) -> list[str]:
    """The text as blocks to translate, in order; joining them with newlines gives it back.

    Blocks are paragraphs (blank lines are blocks of their own), code fences stay whole, and a
    paragraph longer than MAX_BLOCK_WORDS is cut at line ends, then at sentence ends.
    """
    blocks: list[str] = []
    paragraph: list[str] = []
    fence: list[str] | None = None

    def flush() -> None:
        if paragraph:
            blocks.extend(_cut("\n".join(paragraph)))
            paragraph.clear()

    for line in text.strip("\n").splitlines():
        if fence is not None:
            fence.append(line)
            if _FENCE.match(line):
                blocks.append("\n".join(fence))
                fence = None
        elif _FENCE.match(line):
            flush()
            fence = [line]
        elif not line.strip():
            flush()
            blocks.append("")
        else:
            paragraph.append(line)
    flush()
    if fence is not None:
        blocks.append("\n".join(fence))
    return blocks


def _cut(paragraph: str) -> list[str]:
    """Split an over-long paragraph at line ends, then sentence ends, then words."""
    if len(paragraph.split()) <= MAX_BLOCK_WORDS:
        return [paragraph]
    for pieces, sep in ((paragraph.splitlines(), "\n"), (_SENTENCE_END.split(paragraph), " ")):
        if len(pieces) > 1:
            out: list[str] = []
            for group in _groups(pieces):
                out.extend(_cut(sep.join(group)))
            return out
    words = paragraph.split()
    return [" ".join(words[i:i + MAX_BLOCK_WORDS]) for i in range(0, len(words), MAX_BLOCK_WORDS)]


def _groups(pieces: list[str]) -> list[list[str]]:
    groups: list[list[str]] = [[]]
    count = 0
    for piece in pieces:
        n = len(piece.split())
        if groups[-1] and count + n > MAX_BLOCK_WORDS:
            groups.append([])
            count = 0
        groups[-1].append(piece)
        count += n
    return groups


def _needs_model(block: str) -> bool:
    return bool(block.strip()) and not _FENCE.match(block) and any(ch.isalpha() for ch in block)


def _translate_block(backend: ChatModel, block: str, source: str, target: str) -> str:
    budget = max(32, 3 * len(block.split()) + 24)
    options = GenerationOptions(max_tokens=budget, temperature=0.0, repeat_penalty=1.0)
    pieces = backend.chat(translation_messages(block, source, target), options)
    try:
        raw = "".join(pieces)
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()
    return clean_translation(raw) or block


def translate_with_backend(backend: ChatModel, text: str, source: str, target: str = "en",
                           check: Callable[[], None] | None = None) -> str:
    """Translate all of ``text`` from ``source`` to ``target`` with greedy decoding on ``backend``.

    Block by block (see :func:`split_blocks`); a block the model returns nothing usable for is
    kept in the original language rather than dropped. ``check()`` runs before each block and may
    raise to stop (the daemon stops when its client has gone).
    """
    if source == target or not text.strip():
        return text
    out = []
    for block in split_blocks(text):
        if _needs_model(block):
            if check is not None:
                check()
            block = _translate_block(backend, block, source, target)
        out.append(block)
    return "\n".join(out)


@dataclass(frozen=True)
class Translated:
    """A user's text made English: its detected language and the English text."""

    detection: Detection
    text: str

    @property
    def translated(self) -> bool:
        return not self.detection.is_english


def to_english(backend: ChatModel, text: str, check: Callable[[], None] | None = None) -> Translated:
    """Detect the language of ``text`` and translate it to English when it is not English."""
    detection = detect_language(text)
    if detection.is_english:
        return Translated(detection, text)
    return Translated(detection, translate_with_backend(backend, text, detection.language, "en", check))


def reply_instruction(language: str) -> str:
    """The system-prompt sentence that asks for an answer in ``language`` ("" for English)."""
    return "" if language == "en" else f" Always reply in {language_name(language)}."


def reply_language(request: str, detected: Detection | None) -> str:
    """The answer's language for ``--reply-in``: "auto" follows the user's text, else the code."""
    if request == "auto":
        return detected.language if detected is not None else "en"
    return check_language(request)
