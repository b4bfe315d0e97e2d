"""``GET /metrics``: the daemon's counters in the Prometheus text format (``prometheus_client``).

Series (all prefixed ``neuro_``):

- ``http_requests_total{route, method, status}``: every request, by route template (``other`` for
  paths no route serves), including those refused by the Host check or the API key.
- ``queue_waiting`` / ``active_sequences``: requests waiting for the model / being answered
  (at most ``parallel_slots``, the ``--parallel`` of the daemon, at once).
- ``prompt_tokens_total`` / ``generated_tokens_total``: tokens read and written by generations.
- ``time_to_first_token_seconds``: from the request's arrival at the model queue to its first
  text piece (queue wait and prefill included).
- ``time_per_output_token_seconds``: one observation per generation, its decode time divided by
  the tokens after the first.

Each app has its own registry, so several servers in one process do not mix their numbers.
"""

from __future__ import annotations

import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_METHODS = {"GET", "POST", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"}
_TTFT_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)
_TPOT_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2)


class ServerMetrics:
    """The daemon's metrics, read live from the worker where they are state."""

    def __init__(self, worker: Any) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("neuro_http_requests", "HTTP requests by route template, method and status.",
                                ["route", "method", "status"], registry=r)
        Gauge("neuro_queue_waiting", "Requests waiting for the model.", registry=r).set_function(
            lambda: worker.waiting)
        Gauge("neuro_active_sequences", "Requests being answered now (up to --parallel at once).",
              registry=r).set_function(lambda: worker.running)
        Gauge("neuro_parallel_slots", "Requests the model answers at once (--parallel).",
              registry=r).set_function(lambda: worker.parallel)
        self.prompt_tokens = Counter("neuro_prompt_tokens", "Prompt tokens of finished generations.", registry=r)
        self.generated_tokens = Counter("neuro_generated_tokens", "Tokens generated.", registry=r)
        self.ttft = Histogram("neuro_time_to_first_token_seconds",
                              "Seconds from a request's arrival at the model queue to its first text piece.",
                              buckets=_TTFT_BUCKETS, registry=r)
        self.tpot = Histogram("neuro_time_per_output_token_seconds",
                              "Per generation: decode seconds per token after the first.",
                              buckets=_TPOT_BUCKETS, registry=r)

    def observe_generation(self, result: Any, submitted: float) -> None:
        """Record a finished generation (a ``ServedAnswer``) submitted at ``submitted``
        (``time.perf_counter()``)."""
        self.prompt_tokens.inc(result.prompt_tokens)
        self.generated_tokens.inc(result.generated_tokens)
        if result.first_piece_at is not None:
            self.ttft.observe(max(result.first_piece_at - submitted, 0.0))
        if result.generated_tokens > 1 and result.decode_seconds > 0:
            self.tpot.observe(result.decode_seconds / (result.generated_tokens - 1))

    def timed(self, fn: Any) -> Any:
        """``fn(model, job)`` that records its generation's metrics when it returns one."""
        submitted = time.perf_counter()

        def run(model: Any, job: Any) -> Any:
            result = fn(model, job)
            if hasattr(result, "first_piece_at"):
                self.observe_generation(result, submitted)
            return result

        return run


class RequestCounter:
    """ASGI middleware counting every HTTP request by route template, method and status."""

    def __init__(self, app: ASGIApp, metrics: ServerMetrics, routes: list[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    def _route(self, scope: Scope) -> str:
        for route in self.routes:
            match, _ = route.matches(scope)
            if match != Match.NONE:
                return getattr(route, "path", "other")
        return "other"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def counted_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counted_send)
        finally:
            method = scope.get("method", "")
            self.metrics.requests.labels(route=self._route(scope), method=method if method in _METHODS else "other",
                                         status=str(status)).inc()


async def metrics_endpoint(request: Request) -> Response:
    """``GET /metrics``."""
    metrics: ServerMetrics = request.app.state.neuro.metrics
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
