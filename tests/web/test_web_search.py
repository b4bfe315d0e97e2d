"""Web providers against a loopback HTTP server serving recorded, real-shaped responses."""

from __future__ import annotations

import pytest

from neuro_bitnet.errors import ConfigError
from neuro_bitnet.retrieval.grounding import combine_contexts
from neuro_bitnet.web import WebSearchError, WebSettings, web_context, web_search

from support.recorded_web import base_url, recorded_web_server


@pytest.fixture
def server():
    with recorded_web_server() as httpd:
        yield httpd


def base(server) -> str:
    return base_url(server)


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch):
    for var in ("NEURO_BITNET_WEB_PROVIDER", "NEURO_BITNET_WIKIPEDIA_URL", "NEURO_BITNET_SEARXNG_URL",
                "NEURO_BITNET_WEB_TIMEOUT", "NEURO_BITNET_WEB_RESULTS", "NEURO_BITNET_WEB_LANGUAGE"):
        monkeypatch.delenv(var, raising=False)


def test_wikipedia_english_search_and_summary(server) -> None:
    settings = WebSettings(wikipedia_url=base(server) + "/{lang}")
    results = web_search("What is the capital of France?", settings)
    assert [r.title for r in results] == ["Paris"]  # the disambiguation page is dropped
    assert results[0].url == "https://en.wikipedia.org/wiki/Paris"
    assert "capital and largest city of France" in results[0].snippet
    path, params = server.requests[0]
    assert path == "/en/w/api.php" and params["list"] == ["search"] and params["format"] == ["json"]
    assert params["srsearch"] == ["capital France"]  # question words dropped


def test_wikipedia_language_from_question(server) -> None:
    ctx = web_context("¿Quién escribió Don Quijote?", WebSettings(wikipedia_url=base(server) + "/{lang}"))
    assert server.requests[0][0] == "/es/w/api.php"
    assert ctx.sources[0]["url"] == "https://es.wikipedia.org/wiki/Miguel_de_Cervantes"
    assert ctx.sources[0]["n"] == 1 and ctx.sources[0]["kind"] == "web"
    assert "<https://es.wikipedia.org/wiki/Miguel_de_Cervantes>" in ctx.prompt_block
    assert ctx.note is None


def test_settings_from_environment(server, monkeypatch) -> None:
    monkeypatch.setenv("NEURO_BITNET_WIKIPEDIA_URL", base(server) + "/{lang}")
    monkeypatch.setenv("NEURO_BITNET_WEB_LANGUAGE", "en")
    ctx = web_context("¿Cuál es la capital de Francia?")
    assert ctx.sources and ctx.sources[0]["title"] == "Paris"


def test_wikipedia_nothing_found(server) -> None:
    ctx = web_context("zzz qqq", WebSettings(wikipedia_url=base(server) + "/en"))
    assert ctx.sources == [] and "found nothing" in ctx.note


def test_searxng_json_api(server) -> None:
    settings = WebSettings(provider="searxng", searxng_url=base(server) + "/searx", max_results=2)
    results = web_search("bitnet b1.58 ternary", settings)
    assert [r.url for r in results] == ["https://arxiv.org/abs/2402.17764", "https://github.com/microsoft/BitNet"]
    assert server.requests[0][1]["format"] == ["json"]
    refused = WebSettings(provider="searxng", searxng_url=base(server) + "/searx403")
    with pytest.raises(WebSearchError, match="format=json"):
        web_search("x", refused)


def test_offline_and_slow_searches_degrade_with_one_line(server) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    offline = web_context("capital of France", WebSettings(wikipedia_url=f"http://127.0.0.1:{closed_port}"))
    assert offline.sources == [] and offline.note.startswith("web search unavailable")
    assert "\n" not in offline.note
    slow = web_context("capital of France", WebSettings(wikipedia_url=base(server) + "/slow/en", timeout=0.3))
    assert slow.sources == [] and "timed out" in slow.note
    assert not server.release.is_set()  # gave up while the server was still holding the answer
    server.release.set()
    merged = combine_contexts(offline)
    assert merged.is_empty() and merged.note == offline.note


def test_budget_limits_web_sources(server) -> None:
    ctx = web_context("What is the capital of France?", WebSettings(wikipedia_url=base(server) + "/{lang}"),
                      budget_tokens=30, count_tokens=lambda t: len(t.split()))
    assert len(ctx.sources) == 1 and ctx.sources[0].get("truncated")


def test_duckduckgo_without_extra_is_a_clear_message(monkeypatch) -> None:
    import builtins

    real_import = builtins.__import__

    def no_ddgs(name, *args, **kwargs):
        if name == "ddgs":
            raise ImportError("No module named 'ddgs'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ddgs)
    ctx = web_context("anything", WebSettings(provider="duckduckgo"))
    assert "pip install 'neuro-bitnet[web]'" in ctx.note


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown web provider"):
        WebSettings.resolve({"web": {"provider": "altavista"}})
    with pytest.raises(ConfigError, match="http"):
        WebSettings.resolve(searxng_url="ftp://x")
    assert WebSettings.resolve({"web": {"timeout": "2.5"}}).timeout == 2.5
