"""Web search for grounded answers: Wikipedia (default), SearxNG, DuckDuckGo (optional `ddgs`).

    from neuro_bitnet.web import web_context
    ctx = web_context(question, settings, budget_tokens=800, count_tokens=engine.count_tokens)
    # ctx.prompt_block, ctx.sources (with url), ctx.note ("web search unavailable: ..." offline)
"""

from __future__ import annotations

from typing import Any

from neuro_bitnet.retrieval.grounding import CountTokens, GroundedContext, fit_sources
from neuro_bitnet.web import duckduckgo, searxng, wikipedia
from neuro_bitnet.web.base import WebResult, WebSearchError, WebSettings
from neuro_bitnet.web.client import make_client
from neuro_bitnet.web.lang import question_language

PROVIDERS = {"wikipedia": wikipedia.search, "searxng": searxng.search, "duckduckgo": duckduckgo.search}

__all__ = ["WebResult", "WebSearchError", "WebSettings", "web_context", "web_search"]


def web_search(question: str, settings: Any = None) -> list[WebResult]:
    """Results of the configured provider; raises WebSearchError on any failure."""
    web = WebSettings.resolve(settings)
    language = web.language or question_language(question)
    with make_client(web.timeout) as client:
        return PROVIDERS[web.provider](question, web, client, language)


def web_context(question: str, settings: Any = None, budget_tokens: int = 800,
                count_tokens: CountTokens | None = None) -> GroundedContext:
    """Web results as numbered sources within the budget. Never raises for network trouble: it
    returns an empty context whose `note` says why (one line for the user)."""
    web = WebSettings.resolve(settings)
    try:
        results = web_search(question, web)
    except WebSearchError as exc:
        return GroundedContext(note=f"web search unavailable ({exc}); answering without web context")
    if not results:
        return GroundedContext(note=f"web search ({web.provider}) found nothing for this question")
    items = [{"kind": "web", "path": r.url, "url": r.url, "title": r.title, "location": "",
              "score": None, "text": r.snippet, "provider": r.provider} for r in results]
    return GroundedContext(fit_sources(items, budget_tokens, count_tokens))
