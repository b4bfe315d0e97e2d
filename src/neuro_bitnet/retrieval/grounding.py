"""Numbered-sources context for grounded answers: retrieve, fit into a token budget, cite as [n].

`neuro ask --storage/--web`, the daemon's grounded chat and the MCP `ask` tool all ask with
:func:`grounded_question` (through :func:`neuro_bitnet.answering.grounded_messages` or
:func:`neuro_bitnet.answering.prepare_ask`)::

    ctx = retrieve_context(question, storage, budget_tokens, count_tokens)
    web = web_context(question, settings, budget_tokens, count_tokens)   # neuro_bitnet.web
    ctx = combine_contexts(ctx, web)
    user_message = grounded_question(question, ctx)
    ... generate ...
    print(ctx.format_sources())
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

from neuro_bitnet.retrieval.store import StorageSpec, describe

CountTokens = Callable[[str], int]

INSTRUCTIONS = (
    "Answer the question using the numbered sources below. After each fact, cite the source it "
    "comes from by its number in square brackets, like [1] or [2]. If the sources do not contain "
    "the answer, say so instead of guessing."
)
MIN_TRUNCATED_TOKENS = 40


def approx_tokens(text: str) -> int:
    """A conservative token estimate (about 3 characters a token) when no tokenizer is given."""
    return max(1, (len(text) + 2) // 3)


@dataclass
class GroundedContext:
    """Sources fitted to a budget. Each source is a dict with at least n, kind, path, location,
    score and text; web sources also carry url and title."""

    sources: list[dict] = field(default_factory=list)
    note: str | None = None  # one line for the user, e.g. "web search unavailable: ..."
    instructions: str = INSTRUCTIONS

    @property
    def prompt_block(self) -> str:
        """The sources as the model sees them: "[n] where\\ntext", separated by blank lines."""
        return "\n\n".join(f"{source_header(s)}\n{s['text']}" for s in self.sources)

    def is_empty(self) -> bool:
        """True when there is nothing to ground on."""
        return not self.sources

    def format_sources(self) -> str:
        """Lines to print after the answer: "[n] path (location)" or "[n] title <url>"."""
        return "\n".join(source_header(s) for s in self.sources)

    def to_dict(self) -> dict:
        """JSON-ready form (for `--json`)."""
        return {"sources": [dict(s) for s in self.sources], "note": self.note}


def grounded_question(question: str, context: GroundedContext) -> str:
    """The user message of a grounded answer: the instructions, the numbered sources and the
    question (the question alone when there is nothing to ground on)."""
    if context.is_empty():
        return question
    return f"{context.instructions}\n\nSources:\n{context.prompt_block}\n\nQuestion: {question}"


def hit_source(hit: dict) -> dict:
    """A search hit (``SearchHit.to_dict()``) as an unnumbered file source."""
    return {
        "kind": "file", "path": hit["path"], "location": hit.get("location"), "heading": hit.get("heading"),
        "score": round(float(hit.get("score") or 0.0), 6), "similarity": hit.get("similarity"), "text": hit["text"],
    }


def source_header(source: dict) -> str:
    """How a source is named, in the prompt and in the list after the answer."""
    if source.get("kind") == "web":
        title = source.get("title") or source.get("url", "")
        return f"[{source['n']}] {title} <{source.get('url', '')}>"
    location = f" ({source['location']})" if source.get("location") else ""
    return f"[{source['n']}] {source['path']}{location}"


def _truncate(text: str, max_tokens: int, count_tokens: CountTokens) -> str:
    """The longest prefix of `text` (cut at a word) within `max_tokens`, with an ellipsis."""
    lo, hi = 0, len(text)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if count_tokens(text[:mid] + " …") <= max_tokens:
            lo = mid
        else:
            hi = mid - 1
    cut = text[:lo]
    if " " in cut[len(cut) // 2 :]:
        cut = cut[: cut.rfind(" ")]
    return cut.rstrip() + " …"


def fit_sources(items: list[dict], budget_tokens: int, count_tokens: CountTokens | None = None,
                start: int = 1) -> list[dict]:
    """Number `items` from `start` and keep as many as fit in `budget_tokens` (best first); the
    first one that does not fit whole is cut if a useful part fits."""
    count = count_tokens or approx_tokens
    used, kept = 0, []
    for item in items:
        source = dict(item, n=start + len(kept))
        cost = count(source_header(source) + "\n" + source["text"]) + 2
        if used + cost <= budget_tokens:
            kept.append(source)
            used += cost
            continue
        room = budget_tokens - used - count(source_header(source)) - 2
        if room >= min(MIN_TRUNCATED_TOKENS, budget_tokens // 2):
            source["text"] = _truncate(source["text"], room, count)
            source["truncated"] = True
            kept.append(source)
        break
    return kept


def combine_contexts(*contexts: GroundedContext) -> GroundedContext:
    """One context with the sources of all, renumbered 1..n in order; notes are joined."""
    sources: list[dict] = []
    for ctx in contexts:
        sources += [dict(s, n=len(sources) + i + 1) for i, s in enumerate(ctx.sources)]
    notes = [c.note for c in contexts if c.note]
    return GroundedContext(sources, "; ".join(notes) or None)


def retrieve_context(question: str, storage: StorageSpec, budget_tokens: int,
                     count_tokens: CountTokens | None = None, *, top_k: int = 8,
                     embedder: str | None = None, min_similarity: float | None = None) -> GroundedContext:
    """Search the index at `storage` (a directory or a postgresql:// URL) for `question` and fit
    the best chunks into the budget.

    Raises StorageError when there is no usable index there. `min_similarity` drops vector-only
    hits below that cosine similarity (hits that also match lexically are kept).
    """
    from neuro_bitnet.retrieval.search import search

    hits = search(storage, question, top_k=top_k, embedder=embedder)
    items = [hit_source(hit.to_dict()) for hit in hits
             if min_similarity is None or hit.lexical_rank is not None or (hit.similarity or 0.0) >= min_similarity]
    ctx = GroundedContext(fit_sources(items, budget_tokens, count_tokens))
    if not hits:
        ctx = replace(ctx, note=f"no matching passages in {describe(storage)}")
    return ctx
