"""The chat page: ``GET /`` and its static files, shipped in the package (no build step, no CDN).

The page and its files are public (a browser cannot add an ``Authorization`` header to a page
load); with ``--api-key`` the page asks for the key and sends it on its own API calls, which stay
behind the key like every other route.
"""

from __future__ import annotations

import html
from importlib import resources

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import Scope

from neuro_bitnet.retrieval.grounding import INSTRUCTIONS
from neuro_bitnet.server.config import ServerConfig

# The files the page may load, with their media types: nothing else under /static/ is served.
STATIC_FILES = {
    "chat.js": "text/javascript; charset=utf-8",
    "markdown.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
# Only our own files; no inline scripts, no framing, no third-party connections.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


def is_page_request(scope: Scope) -> bool:
    """True for a GET/HEAD of the page or one of its files (served without the API key)."""
    if scope.get("method") not in ("GET", "HEAD"):
        return False
    path = scope.get("path", "")
    return path == "/" or path.removeprefix("/static/") in STATIC_FILES


def _read(name: str) -> bytes:
    return (resources.files("neuro_bitnet.server") / "static" / name).read_bytes()


def render_index(config: ServerConfig) -> str:
    """index.html with what the page must know before its first request (never the key itself)."""
    text = _read("index.html").decode("utf-8")
    return (text.replace("__GROUNDING_INSTRUCTIONS__", html.escape(INSTRUCTIONS, quote=True))
                .replace("__AUTH_REQUIRED__", "true" if config.api_key else "false"))


def page_routes(config: ServerConfig) -> list[BaseRoute]:
    """``GET /`` (the chat page) and ``GET /static/{name}`` (its script and style files)."""
    index_html = render_index(config)
    files = {name: _read(name) for name in STATIC_FILES}

    async def index(request: Request) -> Response:
        return HTMLResponse(index_html, headers=PAGE_HEADERS)

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in files:
            raise HTTPException(404, "Not Found")
        return Response(files[name], media_type=STATIC_FILES[name], headers=PAGE_HEADERS)

    return [Route("/", index, methods=["GET"]), Route("/static/{name}", static, methods=["GET"])]
