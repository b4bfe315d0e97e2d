"""Wikipedia: the Action API's full-text search, then the REST summary of each hit."""

from __future__ import annotations

import re
from html import unescape
from urllib.parse import quote

import httpx

from neuro_bitnet.web.base import WebResult, WebSearchError, WebSettings
from neuro_bitnet.web.client import get_json
from neuro_bitnet.web.lang import keywords

NAME = "wikipedia"


def _base(settings: WebSettings, language: str) -> str:
    return settings.wikipedia_url.replace("{lang}", language).rstrip("/")


def _titles(client: httpx.Client, base: str, query: str, limit: int) -> list[tuple[str, str]]:
    data = get_json(client, f"{base}/w/api.php", {
        "action": "query", "list": "search", "srsearch": query, "srlimit": limit,
        "format": "json", "formatversion": "2", "utf8": "1",
    }, what="Wikipedia search")
    try:
        hits = data["query"]["search"]
        return [(h["title"], h.get("snippet", "")) for h in hits]
    except (KeyError, TypeError):
        if isinstance(data, dict) and "error" in data:
            raise WebSearchError(f"Wikipedia search error: {data['error'].get('info', 'unknown')}") from None
        raise WebSearchError("Wikipedia search answered in an unexpected shape") from None


def _summary(client: httpx.Client, base: str, title: str, snippet: str) -> WebResult | None:
    page = quote(title.replace(" ", "_"), safe="")
    fallback_url = f"{base}/wiki/{page}"
    try:
        data = get_json(client, f"{base}/api/rest_v1/page/summary/{page}", what="Wikipedia summary")
    except WebSearchError:
        text = unescape(re.sub(r"<[^>]+>", "", snippet)).strip()
        return WebResult(title, fallback_url, text, NAME) if text else None
    if not isinstance(data, dict) or data.get("type") == "disambiguation":
        return None
    extract = (data.get("extract") or "").strip()
    if not extract:
        return None
    url = ((data.get("content_urls") or {}).get("desktop") or {}).get("page") or fallback_url
    description = data.get("description")
    text = f"{extract}" if not description else f"{data.get('title', title)}: {description}. {extract}"
    return WebResult(data.get("title") or title, url, text, NAME)


def search(question: str, settings: WebSettings, client: httpx.Client, language: str) -> list[WebResult]:
    """Up to `settings.max_results` article summaries for `question` in `language` (English as a
    fallback when that Wikipedia finds nothing)."""
    for lang in dict.fromkeys([language, "en"]):
        base = _base(settings, lang)
        query = keywords(question, lang)
        titles = _titles(client, base, query, settings.max_results)
        if not titles and query != question.strip():
            titles = _titles(client, base, question.strip(), settings.max_results)
        results = [r for t, s in titles if (r := _summary(client, base, t, s)) is not None]
        if results or "{lang}" not in settings.wikipedia_url:
            return results
    return []
