"""Split sections into overlapping chunks of at most `max_tokens` tokens.

Paragraphs are kept whole where they fit; longer ones are cut on token boundaries. Each chunk
keeps its section's heading path and a location (page, heading or line range).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Callable, Sequence

from neuro_bitnet.retrieval.loaders import Section

# Returns (start, end) character offsets of the tokens of a text.
TokenSpans = Callable[[str], Sequence[tuple[int, int]]]

_WORDISH = re.compile(r"\w+|[^\w\s]", re.UNICODE)


def regex_token_spans(text: str) -> list[tuple[int, int]]:
    """A tokenizer-free approximation: words and punctuation marks."""
    return [m.span() for m in _WORDISH.finditer(text)]


@dataclass
class Chunk:
    """One piece of a document, ready to embed and store."""

    text: str
    heading: str
    location: str
    ordinal: int = 0
    start_line: int = 0
    end_line: int = 0


def chunk_sections(
    sections: Sequence[Section],
    token_spans: TokenSpans = regex_token_spans,
    max_tokens: int = 256,
    overlap: int = 32,
) -> list[Chunk]:
    """Chunk every section; ordinals run over the whole document."""
    if max_tokens < 8:
        raise ValueError("max_tokens must be at least 8")
    overlap = max(0, min(overlap, max_tokens // 2))
    chunks: list[Chunk] = []
    for section in sections:
        for start, end in _pack(section.text, token_spans, max_tokens, overlap):
            body = section.text[start:end].strip()
            if not body:
                continue
            chunk = Chunk(body, section.heading, section.location)
            if section.start_line:
                lead = len(section.text[start:end]) - len(section.text[start:end].lstrip())
                first = section.start_line + section.text.count("\n", 0, start + lead)
                last = first + body.count("\n")
                chunk.start_line, chunk.end_line = first, last
                if not chunk.location:
                    chunk.location = f"line {first}" if first == last else f"lines {first}-{last}"
            chunk.ordinal = len(chunks)
            chunks.append(chunk)
    return chunks


def _paragraphs(text: str) -> list[tuple[int, int]]:
    """Character ranges of blank-line separated paragraphs."""
    spans, pos = [], 0
    for m in re.finditer(r"\n\s*\n", text):
        if m.start() > pos:
            spans.append((pos, m.start()))
        pos = m.end()
    if pos < len(text):
        spans.append((pos, len(text)))
    return spans


def _pack(text: str, token_spans: TokenSpans, max_tokens: int, overlap: int) -> list[tuple[int, int]]:
    """Character ranges of chunks: whole paragraphs packed greedily, long ones split, with overlap."""
    # Token offsets of the whole section, grouped per paragraph.
    pieces: list[list[tuple[int, int]]] = []
    for p_start, p_end in _paragraphs(text):
        toks = [(p_start + s, p_start + e) for s, e in token_spans(text[p_start:p_end])]
        size = max_tokens if len(toks) <= max_tokens else max_tokens - overlap
        start = 0
        while start < len(toks):
            end = _word_cut(toks, start, min(start + size, len(toks)))
            pieces.append(toks[start:end])
            start = end
    ranges: list[tuple[int, int]] = []
    current: list[tuple[int, int]] = []
    for piece in pieces:
        if current and len(current) + len(piece) > max_tokens:
            ranges.append((current[0][0], current[-1][1]))
            tail = current[_word_cut(current, len(current) - overlap, len(current), forward=True):] if overlap else []
            current = tail if len(tail) + len(piece) <= max_tokens else []
        current = current + piece
    if current:
        ranges.append((current[0][0], current[-1][1]))
    return ranges


def _starts_word(toks: Sequence[tuple[int, int]], i: int) -> bool:
    """Whether token `i` begins a word (sub-word tokens of one word touch each other)."""
    return i == 0 or i >= len(toks) or toks[i][0] > toks[i - 1][1]


def _word_cut(toks: Sequence[tuple[int, int]], low: int, cut: int, forward: bool = False) -> int:
    """A cut that does not split a word: `cut` moved back by at most a quarter of the span to a
    word start (the plain cut when none is near); with `forward`, the first word start in
    `low..cut` (an overlap tail that begins with a whole word), else `low`."""
    if forward:
        low = max(low, 0)
        return next((i for i in range(low, cut) if _starts_word(toks, i)), low)
    if cut >= len(toks) or _starts_word(toks, cut):
        return cut
    for i in range(cut - 1, max(low, cut - max(1, (cut - low) // 4)), -1):
        if _starts_word(toks, i):
            return i
    return cut
