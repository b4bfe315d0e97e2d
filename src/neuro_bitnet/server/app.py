"""The Starlette application: OpenAI-compatible routes over one model worker."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import logging
import os
import time
from typing import Any, AsyncIterator

from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from neuro_bitnet import __version__
from neuro_bitnet.answering import SEARCH_TOP_K, grounded_messages
from neuro_bitnet.engine.constrained import Grammar
from neuro_bitnet.errors import NeuroError
from neuro_bitnet.server.config import ServerConfig
from neuro_bitnet.server.errors import APIError, bad_request
from neuro_bitnet.server.generation import (
    GenerationSpec,
    ServedAnswer,
    check_prompt_fits,
    run_chat,
    run_completion,
    token_counter,
)
from neuro_bitnet.server.hosts import HostGuard, HostPolicy
from neuro_bitnet.server.metrics import RequestCounter, ServerMetrics, metrics_endpoint
from neuro_bitnet.server.model_loader import ModelInfo
from neuro_bitnet.server.page import is_page_request, page_routes
from neuro_bitnet.server.responses import CompletionFormatter
from neuro_bitnet.server.retrieval_service import RetrievalBusyError, RetrievalService
from neuro_bitnet.server.schemas import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    SearchRequest,
    parse_json,
    validate,
)
from neuro_bitnet.server.sse import DONE_EVENT, SSE_HEADERS, sse_event
from neuro_bitnet.server.structured import prompt_messages, structured_output
from neuro_bitnet.server.worker import DONE, ERROR, Job, JobCancelled, ModelWorker, QueueFullError, WorkerClosedError

log = logging.getLogger("neuro_bitnet.server")


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


class ServerState:
    """What the routes share: settings, the model's names, the worker, optional retrieval."""

    def __init__(self, config: ServerConfig, info: ModelInfo, worker: ModelWorker,
                 retrieval: RetrievalService | None) -> None:
        self.config = config
        self.info = info
        self.worker = worker
        self.retrieval = retrieval
        self.started = time.time()
        self.metrics = ServerMetrics(worker)

    def check_model(self, name: str | None) -> str:
        """The served model's id if ``name`` refers to it, else a 404 ``model_not_found``."""
        if not self.info.accepts(name):
            raise APIError(
                404,
                f"The model '{name}' does not exist; this server runs '{self.info.id}' "
                f"(also accepted: {', '.join(['default', *self.info.aliases])})",
                code="model_not_found",
                param="model",
            )
        return self.info.id

    def max_tokens(self, requested: int | None) -> int:
        """The answer budget: the request's (within the context) or the server default."""
        if requested is None:
            return self.config.default_max_tokens
        if requested > self.info.ctx_size:
            raise APIError(
                400,
                f"max_tokens is {requested} but the model's context holds {self.info.ctx_size} tokens",
                param="max_tokens",
                code="max_tokens_too_large",
            )
        return requested

    def check_prompt_size(self, texts: list[str], param: str) -> None:
        """Refuse, before any tokenizing, text that cannot fit the context whatever its tokens.

        Tokenizing holds the interpreter lock for its whole run (a 4 MB prompt stalls every
        other request for seconds), so a prompt longer than the context times the longest token
        in bytes is rejected here, at once.
        """
        limit = self.info.ctx_size * self.info.max_token_bytes
        size = sum(len(t.encode("utf-8")) for t in texts)
        if size > limit:
            raise APIError(
                400,
                f"the prompt has {size} bytes, more than the model's context of {self.info.ctx_size} tokens "
                f"can hold (at most {limit} bytes); shorten it or restart the server with a larger --ctx-size",
                code="context_length_exceeded",
                param=param,
            )

    def check_token_ids(self, ids: list[int]) -> None:
        """Token-id prompts: within the vocabulary and the context."""
        check_prompt_fits(len(ids), self.info.ctx_size, param="prompt")
        if self.info.n_vocab is not None:
            bad = next((t for t in ids if not 0 <= t < self.info.n_vocab), None)
            if bad is not None:
                raise APIError(400, f"token id {bad} is outside the vocabulary (0..{self.info.n_vocab - 1})",
                               param="prompt", code="invalid_token_id")


# -- plumbing ----------------------------------------------------------------------------------
async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The request body; a 413 as soon as it is known to exceed ``limit`` bytes, a 408 if it
    has not all arrived within ``timeout`` seconds."""
    declared = request.headers.get("content-length")
    too_big = APIError(413, f"the request body exceeds {limit} bytes", code="request_too_large",
                       headers={"Connection": "close"})
    if declared and declared.isdigit() and int(declared) > limit:
        raise too_big

    async def collect() -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise too_big
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        return await asyncio.wait_for(collect(), timeout)
    except asyncio.TimeoutError:
        raise APIError(408, f"the request body did not arrive within {timeout:g}s", code="request_timeout",
                       headers={"Connection": "close"}) from None


def _is_json(content_type: str | None) -> bool:
    return (content_type or "").partition(";")[0].strip().lower() == "application/json"


async def json_body(request: Request) -> dict[str, Any]:
    """The body of a JSON endpoint: ``Content-Type: application/json`` required (415 otherwise).

    Requiring the JSON type also means a browser page cannot send the request without a CORS
    preflight, which this server only answers for ``--cors-origin`` origins.
    """
    state: ServerState = request.app.state.neuro
    if not _is_json(request.headers.get("content-type")):
        raise APIError(415, "send the request body as JSON with 'Content-Type: application/json'",
                       code="unsupported_media_type")
    return parse_json(await read_body(request, state.config.max_body_bytes, state.config.read_timeout))


def _busy(exc: Exception) -> APIError:
    return APIError(503, f"the server is busy ({exc}); retry shortly", type="server_error",
                    code="server_overloaded", headers={"Retry-After": "1"})


def submit(state: ServerState, fn: Any) -> Job:
    try:
        return state.worker.submit(state.metrics.timed(fn))
    except QueueFullError as exc:
        raise _busy(exc) from None
    except WorkerClosedError:
        raise APIError(503, "the server is shutting down", type="server_error", code="shutting_down") from None


def as_api_error(exc: BaseException) -> APIError:
    """Map an error raised on the model thread to the response the client gets."""
    if isinstance(exc, APIError):
        return exc
    if isinstance(exc, JobCancelled):
        return APIError(503, "the request was cancelled (the server is shutting down)", type="server_error",
                        code="cancelled")
    if isinstance(exc, NeuroError):  # client mistakes were turned into APIErrors before this point
        log.error("the model failed: %s", exc)
        return APIError(500, str(exc), type="server_error")
    log.error("unexpected error while generating", exc_info=exc)
    return APIError(500, "internal error while generating; see the server log", type="server_error")


async def _until_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def await_or_cancel(request: Request, state: ServerState, job: Job, awaitable: Any) -> Any:
    """Await ``awaitable`` unless the client disconnects first, which cancels ``job``."""
    task = asyncio.ensure_future(awaitable)
    watcher = asyncio.ensure_future(_until_disconnect(request.receive))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        task.cancel()
        state.worker.cancel(job)
        raise
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    state.worker.cancel(job)
    raise ClientGone()


async def _collect(job: Job) -> tuple[str, Any]:
    async for kind, value in job.events():
        if kind in (DONE, ERROR):
            return kind, value
    raise AssertionError("unreachable")


async def respond(request: Request, state: ServerState, job: Job, stream: bool, fmt: CompletionFormatter) -> Response:
    """Wait for the job and answer as one JSON body or as server-sent events."""
    try:
        if not stream:
            kind, value = await await_or_cancel(request, state, job, _collect(job))
            if kind == ERROR:
                raise as_api_error(value)
            return JSONResponse(fmt.whole(value))
        # Wait for the first event so that early errors (context overflow...) get a real status.
        first = await await_or_cancel(request, state, job, job.next_event())
    except ClientGone:
        return Response(status_code=499)
    if first[0] == ERROR:
        raise as_api_error(first[1])
    return StreamingResponse(_sse(state, job, first, fmt), media_type="text/event-stream", headers=SSE_HEADERS)


async def _sse(state: ServerState, job: Job, first: tuple[str, Any], fmt: CompletionFormatter) -> AsyncIterator[str]:
    try:
        opening = fmt.first_chunk()
        if opening is not None:
            yield sse_event(opening)
        kind, value = first
        while True:
            if kind == DONE:
                for chunk in fmt.final_chunks(value):
                    yield sse_event(chunk)
                break
            if kind == ERROR:
                yield sse_event(as_api_error(value).body())
                break
            for chunk in fmt.piece_chunks(value):
                yield sse_event(chunk)
            kind, value = await job.next_event()
        yield DONE_EVENT
    finally:
        if not job.finished:  # the client went away mid-answer
            state.worker.cancel(job)


# -- routes ------------------------------------------------------------------------------------
async def health(request: Request) -> JSONResponse:
    state: ServerState = request.app.state.neuro
    return JSONResponse({
        "status": "ok",
        "pid": os.getpid(),  # lets `neuro daemon stop` reach a server started in the foreground
        "model": state.info.id,
        "path": str(state.info.path) if state.info.path else None,
        "uptime": round(time.time() - state.started, 3),
        "auto_translate": state.config.auto_translate,
        "ctx_size": state.info.ctx_size,
        "queue": {"waiting": state.worker.waiting, "busy": state.worker.busy, "running": state.worker.running},
        "parallel": state.worker.parallel,
        "submitted": state.worker.submitted,
        "completed": state.worker.completed,
        "cancelled": state.worker.cancelled,
        "embeddings": bool(state.retrieval and state.retrieval.can_embed),
        "search": bool(state.retrieval and state.retrieval.can_search),
        "version": __version__,
    })


def _model_object(state: ServerState) -> dict[str, Any]:
    return {
        "id": state.info.id,
        "object": "model",
        "created": int(state.started),
        "owned_by": "neuro-bitnet",
        "aliases": state.info.aliases,
        "context_length": state.info.ctx_size,
    }


async def list_models(request: Request) -> JSONResponse:
    state: ServerState = request.app.state.neuro
    return JSONResponse({"object": "list", "data": [_model_object(state)]})


async def get_model(request: Request) -> JSONResponse:
    state: ServerState = request.app.state.neuro
    state.check_model(request.path_params["model"])
    return JSONResponse(_model_object(state))


def _spec(state: ServerState, body: ChatRequest | CompletionRequest, grammar: Grammar | None = None) -> GenerationSpec:
    translate = state.config.auto_translate if body.translate is None else body.translate
    if grammar is not None:  # structured output is never translated
        if body.translate:
            raise APIError(400, "translate cannot be combined with response_format or tools", param="translate")
        translate = False
    return GenerationSpec(
        max_tokens=state.max_tokens(body.requested_max_tokens()),
        sampling=body.sampling(),
        stop=body.stop_list(),
        translate=translate,
        grammar=grammar,
    )


async def chat_completions(request: Request) -> Response:
    state: ServerState = request.app.state.neuro
    body = validate(ChatRequest, await json_body(request))
    model_id = state.check_model(body.model)
    body.check_tool_messages()
    tools, grammar = structured_output(body)
    spec = _spec(state, body, grammar)
    messages = prompt_messages(body.messages, tools)
    state.check_prompt_size([m["content"] for m in messages], "messages")
    if body.grounded():
        job = submit(state, await _grounded_chat(state, messages, spec))
    else:
        job = submit(state, lambda model, job: run_chat(model, job, messages, spec))
    fmt = CompletionFormatter(model=model_id, chat=True, include_usage=body.include_usage(), tools=tools)
    return await respond(request, state, job, body.stream, fmt)


async def _grounded_chat(state: ServerState, messages: list[dict[str, str]], spec: GenerationSpec) -> Any:
    """The work of a chat grounded on the index (``"neuro": {"grounded": true}``): its last
    message, the user's question, is asked as `neuro ask --storage` asks it."""
    if state.retrieval is None or not state.retrieval.can_search:
        raise bad_request("grounded answers need an index: start the daemon with --storage DIR", "neuro",
                          code="grounding_unavailable")
    if messages[-1]["role"] != "user":
        raise bad_request("a grounded chat ends with the user's question", "messages")
    question, history = messages[-1]["content"], messages[:-1]
    try:
        hits = await state.retrieval.search(question, SEARCH_TOP_K)
    except RetrievalBusyError as exc:
        raise _busy(exc) from None

    def work(model: Any, job: Job) -> ServedAnswer:
        grounded, context = grounded_messages(question, hits, token_counter(model), ctx_size=model.ctx_size,
                                              max_tokens=spec.max_tokens, history=history)
        result = run_chat(model, job, grounded, spec)
        result.sources = context.sources
        return result

    return work


async def completions(request: Request) -> Response:
    state: ServerState = request.app.state.neuro
    body = validate(CompletionRequest, await json_body(request))
    model_id = state.check_model(body.model)
    spec = _spec(state, body)
    prompt = body.prompt_value()
    if isinstance(prompt, str):
        state.check_prompt_size([prompt], "prompt")
    else:
        state.check_token_ids(prompt)
    job = submit(state, lambda model, job: run_completion(model, job, prompt, spec))
    fmt = CompletionFormatter(model=model_id, chat=False, include_usage=body.include_usage())
    return await respond(request, state, job, body.stream, fmt)


async def embeddings(request: Request) -> JSONResponse:
    state: ServerState = request.app.state.neuro
    body = validate(EmbeddingRequest, await json_body(request))
    retrieval = state.retrieval
    if retrieval is None or not retrieval.can_embed:
        raise APIError(404, "embeddings are off: start the server with --embedder NAME or --storage DIR",
                       code="embeddings_disabled")
    if body.model is not None and body.model.lower() not in {"default", str(retrieval.embedder_name).lower()}:
        raise APIError(404, f"The model '{body.model}' does not exist; embeddings come from "
                       f"'{retrieval.embedder_name}'", code="model_not_found", param="model")
    texts = body.texts()
    try:
        vectors, tokens = await retrieval.embed(texts, query=body.input_type == "query")
    except RetrievalBusyError as exc:
        raise _busy(exc) from None
    data = []
    for i, vector in enumerate(vectors):
        if body.encoding_format == "base64":
            value: Any = base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
        else:
            value = vector.tolist()
        data.append({"object": "embedding", "index": i, "embedding": value})
    return JSONResponse({
        "object": "list",
        "data": data,
        "model": retrieval.embedder_name,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    })


async def search(request: Request) -> JSONResponse:
    state: ServerState = request.app.state.neuro
    body = validate(SearchRequest, await json_body(request))
    if state.retrieval is None or not state.retrieval.can_search:
        raise APIError(404, "search is off: start the server with --storage DIR (an index built with "
                       "`neuro index`)", code="search_disabled")
    try:
        hits = await state.retrieval.search(body.query, body.top_k)
    except RetrievalBusyError as exc:
        raise _busy(exc) from None
    return JSONResponse({"object": "list", "query": body.query, "data": hits})


# -- errors and auth ----------------------------------------------------------------------------
async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code)
    message = f"{request.method} {request.url.path}: {exc.detail}"
    return APIError(exc.status_code, message, code=code, headers=exc.headers).response()


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return APIError(500, "internal server error; see the server log", type="server_error").response()


class BearerAuth:
    """Rejects every request without ``Authorization: Bearer <key>`` (401, OpenAI-style), except
    loads of the chat page and its files (the page then sends the key on its API calls)."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.key = api_key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not is_page_request(scope):
            scheme, _, token = Headers(scope=scope).get("authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.key):
                error = APIError(401, "Missing or incorrect API key: send 'Authorization: Bearer <key>'",
                                 code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
                await error.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _ollama_routes() -> list[Route]:
    from neuro_bitnet.server.ollama import ollama_routes  # it builds on this module's helpers

    return ollama_routes()


def create_app(model: Any, info: ModelInfo, config: ServerConfig,
               retrieval: RetrievalService | None = None) -> Starlette:
    """The ASGI app serving ``model``; its worker thread stops when the app shuts down."""
    worker = ModelWorker(model, max_queue=config.max_queue)
    state = ServerState(config, info, worker, retrieval)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        await asyncio.get_running_loop().run_in_executor(None, worker.close, 10.0)
        if retrieval is not None:
            retrieval.close()

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/v1/models/{model:path}", get_model, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/generate", completions, methods=["POST"]),
        Route("/v1/embeddings", embeddings, methods=["POST"]),
        Route("/v1/search", search, methods=["POST"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
        *_ollama_routes(),
        *page_routes(config),
    ]
    middleware = [Middleware(RequestCounter, metrics=state.metrics, routes=routes),  # outermost: counts refusals too
                  Middleware(HostGuard, policy=HostPolicy(config.host, config.allowed_hosts))]
    if config.cors_origins:  # outside the key check: preflight requests carry no Authorization
        middleware.append(Middleware(CORSMiddleware, allow_origins=config.cors_origins,
                                     allow_methods=["GET", "POST"],
                                     allow_headers=["authorization", "content-type"], max_age=600))
    if config.api_key:
        middleware.append(Middleware(BearerAuth, api_key=config.api_key))
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        middleware=middleware,
        exception_handlers={APIError: _api_error, HTTPException: _http_error, Exception: _internal_error},
    )
    app.state.neuro = state
    return app
