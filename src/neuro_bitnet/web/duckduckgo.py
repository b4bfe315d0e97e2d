"""DuckDuckGo through the optional `ddgs` package (pip install 'neuro-bitnet[web]')."""

from __future__ import annotations

from neuro_bitnet.web.base import WebResult, WebSearchError, WebSettings

NAME = "duckduckgo"
REGIONS = {"en": "us-en", "es": "es-es", "fr": "fr-fr", "de": "de-de", "it": "it-it", "pt": "pt-pt",
           "nl": "nl-nl", "ca": "es-ca"}


def search(question: str, settings: WebSettings, client: object, language: str) -> list[WebResult]:
    """Text results from DuckDuckGo (the `client` is unused: ddgs has its own)."""
    try:
        from ddgs import DDGS
    except ImportError:
        raise WebSearchError("DuckDuckGo search needs the ddgs package (pip install 'neuro-bitnet[web]')") from None
    try:
        items = DDGS(timeout=max(1, int(settings.timeout))).text(
            question, region=REGIONS.get(language, "wt-wt"), max_results=settings.max_results)
    except Exception as exc:  # ddgs raises its own exception types for network trouble
        raise WebSearchError(f"DuckDuckGo search failed ({type(exc).__name__})") from None
    return [WebResult(i.get("title") or i["href"], i["href"], i.get("body") or "", NAME)
            for i in items or [] if i.get("href")][: settings.max_results]
