"""What every web search provider returns, and the settings they read."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from neuro_bitnet.errors import NeuroError

DEFAULT_WIKIPEDIA_URL = "https://{lang}.wikipedia.org"
DEFAULT_TIMEOUT = 4.0
PROVIDERS = ("wikipedia", "searxng", "duckduckgo")

# Setting -> environment variable.
ENV_VARS = {
    "provider": "NEURO_BITNET_WEB_PROVIDER",
    "wikipedia_url": "NEURO_BITNET_WIKIPEDIA_URL",
    "searxng_url": "NEURO_BITNET_SEARXNG_URL",
    "timeout": "NEURO_BITNET_WEB_TIMEOUT",
    "max_results": "NEURO_BITNET_WEB_RESULTS",
    "language": "NEURO_BITNET_WEB_LANGUAGE",
}


class WebSearchError(NeuroError):
    """A web search failed (offline, timeout, bad answer, provider not installed)."""

    exit_code = 8


@dataclass(frozen=True)
class WebResult:
    """One search result: a titled snippet with the URL to cite."""

    title: str
    url: str
    snippet: str
    provider: str


@dataclass(frozen=True)
class WebSettings:
    """Web search settings. `wikipedia_url` may hold `{lang}`, filled from the question's language."""

    provider: str = "wikipedia"
    wikipedia_url: str = DEFAULT_WIKIPEDIA_URL
    searxng_url: str = ""
    timeout: float = DEFAULT_TIMEOUT
    max_results: int = 3
    language: str = ""  # force a language instead of detecting it

    @classmethod
    def resolve(cls, settings: Any = None, **overrides: Any) -> "WebSettings":
        """Settings from, in order: keyword overrides, attributes `web_<name>` (or a `web` mapping)
        of `settings` when present, environment variables, defaults."""
        values: dict[str, Any] = {}
        for name, var in ENV_VARS.items():
            raw = os.environ.get(var, "").strip()
            if raw:
                values[name] = raw
        if isinstance(settings, WebSettings):
            values.update({k: getattr(settings, k) for k in ENV_VARS})
        elif settings is not None:
            section = settings.get("web", {}) if isinstance(settings, dict) else getattr(settings, "web", None)
            for name in ENV_VARS:
                value = getattr(settings, f"web_{name}", None)
                if isinstance(section, dict) and section.get(name) not in (None, ""):
                    value = section[name]
                if value not in (None, ""):
                    values[name] = value
        values.update({k: v for k, v in overrides.items() if v not in (None, "")})
        return cls._validated(values)

    @classmethod
    def _validated(cls, values: dict[str, Any]) -> "WebSettings":
        from neuro_bitnet.errors import ConfigError

        provider = str(values.get("provider", "wikipedia")).lower()
        if provider not in PROVIDERS:
            raise ConfigError(f"unknown web provider {provider!r}; use one of {', '.join(PROVIDERS)}")
        try:
            timeout = float(values.get("timeout", DEFAULT_TIMEOUT))
            max_results = int(values.get("max_results", 3))
        except (TypeError, ValueError):
            raise ConfigError("web timeout must be a number of seconds and web results a whole number") from None
        if timeout <= 0 or max_results <= 0:
            raise ConfigError("web timeout and web results must be positive")
        for key in ("wikipedia_url", "searxng_url"):
            url = str(values.get(key, "") or "")
            if url and not url.startswith(("http://", "https://")):
                raise ConfigError(f"web {key} must be an http(s) URL, got {url!r}")
        return cls(provider, str(values.get("wikipedia_url") or DEFAULT_WIKIPEDIA_URL).rstrip("/"),
                   str(values.get("searxng_url") or "").rstrip("/"), timeout, max_results,
                   str(values.get("language") or ""))
