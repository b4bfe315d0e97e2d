"""SearxNG: a self-hosted metasearch instance through its JSON API (`/search?format=json`)."""

from __future__ import annotations

import httpx

from neuro_bitnet.web.base import WebResult, WebSearchError, WebSettings
from neuro_bitnet.web.client import get_json

NAME = "searxng"


def search(question: str, settings: WebSettings, client: httpx.Client, language: str) -> list[WebResult]:
    """Results of the configured instance (`searxng_url`)."""
    if not settings.searxng_url:
        raise WebSearchError("SearxNG needs an instance URL (set NEURO_BITNET_SEARXNG_URL)")
    try:
        data = get_json(client, f"{settings.searxng_url}/search",
                        {"q": question, "format": "json", "language": language, "safesearch": 1},
                        what="SearxNG")
    except WebSearchError as exc:
        if "HTTP 403" in str(exc):
            raise WebSearchError(
                "SearxNG refused format=json (enable json in search.formats of its settings.yml)"
            ) from None
        raise
    results = []
    for item in (data.get("results") or []) if isinstance(data, dict) else []:
        url, title = item.get("url"), (item.get("title") or "").strip()
        snippet = (item.get("content") or "").strip()
        if url and (title or snippet):
            results.append(WebResult(title or url, url, snippet or title, NAME))
        if len(results) >= settings.max_results:
            break
    return results
