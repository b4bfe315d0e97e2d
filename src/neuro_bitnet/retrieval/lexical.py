"""Word matching rules both stores follow: how a query becomes terms, how accents are folded, and
which terms are too common to search for."""

from __future__ import annotations

import re
import unicodedata
from typing import Mapping

MAX_QUERY_TERMS = 32
# Query terms found in more than this share of chunks are dropped (stopwords in any language),
# unless every term is that common; keeps the ranking from matching the whole index.
COMMON_TERM_SHARE = 0.2
# Below this many chunks every term is kept (the shares of a tiny index mean little).
MIN_CHUNKS_FOR_COMMON_TERMS = 50


def fold_accents(text: str) -> str:
    """Lower case without diacritics ("Canción" -> "cancion"), as FTS5's unicode61 tokenizer
    with remove_diacritics 2 stores terms; the PostgreSQL store folds text this way before
    `to_tsvector`, so both match accent-insensitively."""
    decomposed = unicodedata.normalize("NFD", text.lower())
    return unicodedata.normalize("NFC", "".join(ch for ch in decomposed if not unicodedata.combining(ch)))


def query_terms(query: str) -> list[str]:
    """The distinct words of a query, lower case, accents folded, at most MAX_QUERY_TERMS."""
    return list(dict.fromkeys(fold_accents(t) for t in re.findall(r"\w+", query.lower())))[:MAX_QUERY_TERMS]


def selective_terms(terms: list[str], doc_freq: Mapping[str, int], total: int) -> list[str]:
    """The terms worth searching for: those in the index (`doc_freq`: chunk counts, a term
    missing or 0 is in no chunk) and in at most COMMON_TERM_SHARE of its `total` chunks; if all
    present terms are that common, the rarest one. Tiny indexes keep every term."""
    if total < MIN_CHUNKS_FOR_COMMON_TERMS:
        return terms
    present = [t for t in terms if doc_freq.get(t, 0) > 0]
    keep = [t for t in present if doc_freq[t] <= COMMON_TERM_SHARE * total]
    if not keep and present:
        keep = [min(present, key=lambda t: doc_freq[t])]
    return keep
