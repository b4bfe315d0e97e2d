"""One short-timeout HTTP client for the providers, with errors turned into WebSearchError."""

from __future__ import annotations

from typing import Any

import httpx

from neuro_bitnet import __version__
from neuro_bitnet.web.base import WebSearchError

USER_AGENT = f"neuro-bitnet/{__version__} (local assistant; https://pypi.org/project/neuro-bitnet/)"


def make_client(timeout: float) -> httpx.Client:
    """A client that gives up quickly: `timeout` for connecting and for each read."""
    return httpx.Client(timeout=httpx.Timeout(timeout), headers={"User-Agent": USER_AGENT},
                        follow_redirects=True)


def get_json(client: httpx.Client, url: str, params: dict[str, Any] | None = None, what: str = "web search") -> Any:
    """GET `url` and decode JSON; every failure becomes a one-line WebSearchError."""
    try:
        response = client.get(url, params=params)
    except httpx.TimeoutException:
        raise WebSearchError(f"{what} timed out") from None
    except httpx.HTTPError as exc:
        raise WebSearchError(f"{what} unreachable ({type(exc).__name__})") from None
    if response.status_code != 200:
        raise WebSearchError(f"{what} answered HTTP {response.status_code}")
    try:
        return response.json()
    except ValueError:
        raise WebSearchError(f"{what} did not answer JSON") from None
