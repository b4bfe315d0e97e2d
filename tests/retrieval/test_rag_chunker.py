"""Token chunking with overlap and locations."""

from __future__ import annotations

import re

from neuro_bitnet.retrieval.chunker import chunk_sections, regex_token_spans
from neuro_bitnet.retrieval.loaders import Section


def words(n: int, start: int = 0) -> str:
    return " ".join(f"w{i}" for i in range(start, start + n))


def test_small_paragraphs_are_packed_and_kept_whole() -> None:
    text = "\n\n".join(words(10, i * 10) for i in range(5))  # 5 paragraphs x 10 tokens
    chunks = chunk_sections([Section(text, "H", "", 1)], max_tokens=25, overlap=0)
    assert [len(regex_token_spans(c.text)) for c in chunks] == [20, 20, 10]
    assert all(c.heading == "H" for c in chunks)
    assert chunks[0].location == "lines 1-3" and chunks[1].location == "lines 5-7"


def test_long_paragraph_split_with_overlap_and_limit() -> None:
    text = words(1000)
    chunks = chunk_sections([Section(text, "", "", 1)], max_tokens=100, overlap=20)
    sizes = [len(regex_token_spans(c.text)) for c in chunks]
    assert max(sizes) <= 100
    covered = set()
    for c in chunks:
        covered |= set(c.text.split())
    assert covered == set(text.split())  # nothing lost
    for a, b in zip(chunks, chunks[1:]):
        assert a.text.split()[-20:] == b.text.split()[:20]  # overlap carried over
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))


def test_fixed_location_kept_and_custom_tokenizer() -> None:
    # A tokenizer with 1 token per character: limits apply in its tokens, not words.
    def chars(text: str) -> list[tuple[int, int]]:
        return [(i, i + 1) for i, ch in enumerate(text) if not ch.isspace()]

    chunks = chunk_sections([Section("abcdefghij" * 5, "", "page 4", 0)], token_spans=chars, max_tokens=20, overlap=5)
    assert all(len(c.text) <= 20 for c in chunks) and all(c.location == "page 4" for c in chunks)
    assert "".join(c.text[5:] if i else c.text for i, c in enumerate(chunks)) == "abcdefghij" * 5


def test_embedding_batches_are_bounded_in_texts_and_tokens() -> None:
    from neuro_bitnet.retrieval.embedders.onnx_embedder import BATCH_SIZE, BATCH_TOKENS, _batches

    lengths = [512] * 32 + [10] * 100 + [5000]
    batches = _batches(lengths)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        longest = max(lengths[i] for i in batch)
        assert len(batch) <= BATCH_SIZE and (len(batch) == 1 or len(batch) * longest <= BATCH_TOKENS)
    assert [len(lengths) - 1] in batches  # longer than the budget: alone
    assert max(len(b) for b in batches) == BATCH_SIZE  # short texts fill whole batches
    assert len(batches) <= 4 + 32 * 512 // BATCH_TOKENS + 1 + 1  # not more runs than needed


def test_long_paragraphs_are_cut_between_words_even_without_overlap() -> None:
    """A sub-word tokenizer (2 characters per token): a cut inside a word would lose it for keyword search."""
    def pairs(text: str) -> list[tuple[int, int]]:
        spans = []
        for m in re.finditer(r"\S+", text):
            spans += [(i, min(i + 2, m.end())) for i in range(m.start(), m.end(), 2)]
        return spans

    text = " ".join(f"word{i}" for i in range(500))  # 3-4 tokens per word
    for overlap in (0, 7):
        chunks = chunk_sections([Section(text, "", "", 1)], token_spans=pairs, max_tokens=50, overlap=overlap)
        assert all(len(pairs(c.text)) <= 50 for c in chunks)
        assert {w for c in chunks for w in c.text.split()} == set(text.split())
