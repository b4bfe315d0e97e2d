"""Building the retrieval callback for `neuro ask --storage/--web`."""

from __future__ import annotations

from typing import Callable

from neuro_bitnet.config import Settings
from neuro_bitnet.retrieval.grounding import GroundedContext, combine_contexts, retrieve_context
from neuro_bitnet.retrieval.store import StorageSpec


def check_sources(*, storage: StorageSpec | None, web: bool, settings: Settings) -> None:
    """Fail at once (before the model loads) on a missing index or a bad web setting."""
    if storage is not None:
        from neuro_bitnet.retrieval.store import open_store

        open_store(storage).close()  # StorageError naming the directory or URL when there is no index
    if web:
        from neuro_bitnet.web.base import WebSettings

        WebSettings.resolve(settings)  # ConfigError for an unknown provider or a bad value


def make_retriever(*, storage: StorageSpec | None, web: bool, settings: Settings,
                   count_tokens: Callable[[str], int]) -> Callable[[str, int], GroundedContext]:
    """A function (question, budget) -> numbered sources from the index and/or the web.

    With both, the budget is split: documents first (two thirds), then the web.
    """

    def retrieve(question: str, budget: int) -> GroundedContext:
        parts = []
        doc_budget = budget if not web else (budget * 2) // 3
        if storage is not None:
            parts.append(retrieve_context(question, storage, doc_budget, count_tokens))
        if web:
            from neuro_bitnet.web import web_context

            parts.append(web_context(question, settings, budget - sum(_cost(p, count_tokens) for p in parts),
                                     count_tokens))
        return combine_contexts(*parts)

    return retrieve


def _cost(context: GroundedContext, count_tokens: Callable[[str], int]) -> int:
    return count_tokens(context.prompt_block) if context.sources else 0
