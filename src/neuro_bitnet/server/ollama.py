"""The Ollama API on the same server: ``/api/chat``, ``/api/generate``, ``/api/tags``, ...

Tools configured for Ollama (editor plug-ins, chat front ends, the ``ollama`` Python client) can
point at ``neuro serve --port 11434``. Streaming is NDJSON (one JSON object per line), the
default as in Ollama; ``"stream": false`` gives one object. Fields Ollama's clients read are
filled: ``done``, ``done_reason``, ``eval_count``, ``prompt_eval_count`` and the durations in
nanoseconds. Unknown fields and options are ignored, as Ollama does (``keep_alive``, ``num_ctx``,
``num_thread``... too: the one model stays loaded with the server's context). Features this
server does not have (images, tools on /api/chat: use /v1/chat/completions) are 400s. Errors are
Ollama-style ``{"error": "..."}`` bodies.
"""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timezone
from typing import Any, AsyncIterator

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from neuro_bitnet import __version__
from neuro_bitnet.engine.constrained import Grammar
from neuro_bitnet.server.app import (
    ClientGone,
    ServerState,
    _collect,
    as_api_error,
    await_or_cancel,
    json_body,
    submit,
)
from neuro_bitnet.server.errors import APIError
from neuro_bitnet.server.generation import GenerationSpec, ServedAnswer, run_chat, run_completion
from neuro_bitnet.server.retrieval_service import RetrievalBusyError
from neuro_bitnet.server.schemas import DEFAULT_SAMPLING, MAX_EMBEDDING_INPUTS, MAX_STOP_SEQUENCES
from neuro_bitnet.server.structured import compile_grammar
from neuro_bitnet.server.worker import DONE, ERROR, Job

NDJSON = "application/x-ndjson"
_ROLES = {"system", "user", "assistant"}


def _error(exc: APIError) -> JSONResponse:
    return JSONResponse({"error": exc.message}, status_code=exc.status, headers=exc.headers)


def _ollama_errors(handler: Any) -> Any:
    """Render this module's errors the way Ollama does."""
    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except APIError as exc:
            return _error(exc)
    return wrapped


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


# -- model listing ------------------------------------------------------------------------------
def _tag(state: ServerState) -> str:
    return state.info.id if ":" in state.info.id else state.info.id + ":latest"


def _model_name(state: ServerState, name: Any) -> str:
    """The served model's tag if ``name`` (with or without ``:latest``) refers to it, else 404."""
    if name is not None and not isinstance(name, str):
        raise APIError(400, "'model' must be a string")
    wanted = (name or "").strip()
    if wanted.endswith(":latest"):
        wanted = wanted[: -len(":latest")]
    if not state.info.accepts(wanted):
        raise APIError(404, f"model '{name}' not found; this server runs '{_tag(state)}'")
    return _tag(state)


def _details(state: ServerState) -> dict[str, Any]:
    model = state.worker.model
    hparams = getattr(model, "hparams", None)
    gguf = getattr(model, "_gguf", None)
    arch = str(gguf.metadata.get("general.architecture", "")) if gguf is not None else ""
    return {
        "parent_model": "",
        "format": "gguf",
        "family": arch,
        "families": [arch] if arch else [],
        "parameter_size": _parameter_size(hparams),
        "quantization_level": "I2_S",
    }


def _parameter_size(hparams: Any) -> str:
    if hparams is None:
        return ""
    h = hparams
    per_layer = 2 * h.n_embd * h.n_head * h.head_dim + 2 * h.n_embd * h.n_head_kv * h.head_dim + 3 * h.n_embd * h.n_ff
    total = h.n_layer * per_layer + h.n_vocab * h.n_embd
    return f"{total / 1e9:.1f}B" if total >= 1e8 else f"{total / 1e6:.1f}M"


def _file_facts(state: ServerState) -> tuple[int, str, str]:
    """(size in bytes, a digest of the file's identity, modification time)."""
    path = state.info.path
    try:
        st = path.stat() if path is not None else None
    except OSError:
        st = None
    if path is None or st is None:
        return 0, "", _now()
    ident = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()
    modified = datetime.fromtimestamp(st.st_mtime, timezone.utc).isoformat().replace("+00:00", "Z")
    return st.st_size, hashlib.sha256(ident).hexdigest(), modified


def _entry(state: ServerState) -> dict[str, Any]:
    size, digest, modified = _file_facts(state)
    tag = _tag(state)
    return {"name": tag, "model": tag, "modified_at": modified, "size": size, "digest": digest,
            "details": _details(state)}


async def version(request: Request) -> JSONResponse:
    return JSONResponse({"version": __version__})


async def tags(request: Request) -> JSONResponse:
    return JSONResponse({"models": [_entry(request.app.state.neuro)]})


async def ps(request: Request) -> JSONResponse:
    state: ServerState = request.app.state.neuro
    entry = _entry(state)
    entry.pop("modified_at")
    entry.update(expires_at="9999-12-31T23:59:59Z", size_vram=0, context_length=state.info.ctx_size)
    return JSONResponse({"models": [entry]})


@_ollama_errors
async def show(request: Request) -> JSONResponse:
    state: ServerState = request.app.state.neuro
    body = await json_body(request)
    _model_name(state, body.get("model", body.get("name")))
    model = state.worker.model
    gguf = getattr(model, "_gguf", None)
    info = {k: v for k, v in (gguf.metadata.items() if gguf is not None else [])
            if not k.startswith("tokenizer.ggml.") and isinstance(v, (str, int, float, bool))}
    size, _, modified = _file_facts(state)
    return JSONResponse({
        "modelfile": f"FROM {state.info.path}\n" if state.info.path else "",
        "parameters": "",
        "template": getattr(model, "chat_template", None) or "",
        "details": _details(state),
        "model_info": info,
        "capabilities": ["completion"],
        "modified_at": modified,
    })


# -- generation ---------------------------------------------------------------------------------
def _options(body: dict[str, Any], state: ServerState) -> tuple[int, dict[str, Any], list[str]]:
    """(max_tokens, engine sampling kwargs, stop strings) from Ollama's ``options``."""
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise APIError(400, "'options' must be an object")
    sampling = dict(DEFAULT_SAMPLING)
    for key in ("temperature", "top_k", "top_p", "min_p", "repeat_penalty"):  # ranges: in GenerationSpec
        value = options.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int if key == "top_k" else (int, float)):
            raise APIError(400, f"invalid option '{key}': {value!r}")
        try:
            sampling[key] = value if key == "top_k" else float(value)
        except OverflowError:  # an integer past the floats
            raise APIError(400, f"invalid option '{key}': a number too large") from None
    seed = options.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise APIError(400, f"invalid option 'seed': {seed!r}")
    sampling["seed"] = seed
    predict = options.get("num_predict")
    if predict is None:
        max_tokens = state.config.default_max_tokens
    elif isinstance(predict, bool) or not isinstance(predict, int) or predict == 0 or predict < -2:
        raise APIError(400, f"invalid option 'num_predict': {predict!r} (a positive count, -1 or -2)")
    else:
        max_tokens = state.info.ctx_size if predict < 0 else min(predict, state.info.ctx_size)
    stop = options.get("stop") or []
    if isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
        raise APIError(400, "option 'stop' must be a list of strings")
    if len(stop) > MAX_STOP_SEQUENCES:
        raise APIError(400, f"at most {MAX_STOP_SEQUENCES} stop sequences are allowed")
    return max_tokens, sampling, [s for s in stop if s]


def _format_grammar(fmt: Any) -> Grammar | None:
    """Ollama's ``format``: "json" (any JSON object) or a JSON schema."""
    if fmt is None or fmt == "":
        return None
    if fmt == "json":
        return Grammar.json_object()
    if isinstance(fmt, dict):
        return compile_grammar(lambda: Grammar.json_schema(fmt), "format")
    raise APIError(400, f"'format' must be \"json\" or a JSON schema object, not {fmt!r:.40}")


def _spec(body: dict[str, Any], state: ServerState) -> GenerationSpec:
    max_tokens, sampling, stop = _options(body, state)
    grammar = _format_grammar(body.get("format"))
    translate = state.config.auto_translate and grammar is None
    return GenerationSpec(max_tokens=max_tokens, sampling=sampling, stop=stop, translate=translate, grammar=grammar)


def _messages(raw: Any) -> list[dict[str, str]]:
    if not isinstance(raw, list):
        raise APIError(400, "'messages' must be a list")
    out = []
    for i, m in enumerate(raw):
        if not isinstance(m, dict) or m.get("role") not in _ROLES or not isinstance(m.get("content", ""), str):
            raise APIError(400, f"message {i} must have a role (system, user or assistant) and text content")
        if m.get("images"):
            raise APIError(400, "images are not supported: this is a text-only model")
        out.append({"role": m["role"], "content": m.get("content", "")})
    return out


def _stream_flag(body: dict[str, Any]) -> bool:
    stream = body.get("stream", True)
    if not isinstance(stream, bool):
        raise APIError(400, "'stream' must be true or false")
    return stream


def _final_fields(result: ServedAnswer, started: float) -> dict[str, Any]:
    end = time.perf_counter()
    return {
        "done": True,
        "done_reason": "length" if result.finish_reason == "length" else "stop",
        "total_duration": int((end - started) * 1e9),
        "load_duration": 0,
        "prompt_eval_count": result.prompt_tokens,
        "prompt_eval_duration": int(result.prefill_seconds * 1e9),
        "eval_count": result.generated_tokens,
        "eval_duration": int(result.decode_seconds * 1e9),
    }


async def _answer(request: Request, state: ServerState, job: Job, stream: bool, started: float,
                  shape: Any) -> Response:
    """The whole answer as one object, or NDJSON lines; ``shape(text, final)`` builds a line."""
    try:
        if not stream:
            kind, value = await await_or_cancel(request, state, job, _collect(job))
            if kind == ERROR:
                raise as_api_error(value)
            return JSONResponse({**shape(value.text, value), **_final_fields(value, started)})
        first = await await_or_cancel(request, state, job, job.next_event())
    except ClientGone:
        return Response(status_code=499)
    if first[0] == ERROR:
        raise as_api_error(first[1])

    async def lines() -> AsyncIterator[str]:
        kind, value = first
        try:
            while True:
                if kind == DONE:
                    yield json.dumps({**shape("", value), **_final_fields(value, started)}) + "\n"
                    return
                if kind == ERROR:
                    yield json.dumps({"error": as_api_error(value).message}) + "\n"
                    return
                yield json.dumps({**shape(value, None), "done": False}, ensure_ascii=False) + "\n"
                kind, value = await job.next_event()
        finally:
            if not job.finished:
                state.worker.cancel(job)

    return StreamingResponse(lines(), media_type=NDJSON)


@_ollama_errors
async def chat(request: Request) -> Response:
    state: ServerState = request.app.state.neuro
    started = time.perf_counter()
    body = await json_body(request)
    name = _model_name(state, body.get("model"))
    if body.get("tools"):
        raise APIError(400, "tools are supported on /v1/chat/completions (OpenAI format), not on /api/chat")
    messages = _messages(body.get("messages", []))
    spec = _spec(body, state)
    stream = _stream_flag(body)
    if not messages:  # Ollama: an empty conversation loads the model and returns
        return JSONResponse({"model": name, "created_at": _now(), "message": {"role": "assistant", "content": ""},
                             "done": True, "done_reason": "load"})
    state.check_prompt_size([m["content"] for m in messages], "messages")
    job = submit(state, lambda model, job: run_chat(model, job, messages, spec))

    def shape(text: str, final: Any) -> dict[str, Any]:
        return {"model": name, "created_at": _now(), "message": {"role": "assistant", "content": text}}

    return await _answer(request, state, job, stream, started, shape)


@_ollama_errors
async def generate(request: Request) -> Response:
    state: ServerState = request.app.state.neuro
    started = time.perf_counter()
    body = await json_body(request)
    name = _model_name(state, body.get("model"))
    prompt, system = body.get("prompt", ""), body.get("system")
    if not isinstance(prompt, str) or (system is not None and not isinstance(system, str)):
        raise APIError(400, "'prompt' and 'system' must be strings")
    if body.get("images"):
        raise APIError(400, "images are not supported: this is a text-only model")
    if body.get("suffix"):
        raise APIError(400, "'suffix' (fill-in-the-middle) is not supported by this model")
    spec = _spec(body, state)
    stream = _stream_flag(body)
    if not prompt:  # Ollama: an empty prompt loads the model and returns
        return JSONResponse({"model": name, "created_at": _now(), "response": "", "done": True,
                             "done_reason": "load"})
    state.check_prompt_size([prompt, system or ""], "prompt")
    if body.get("raw"):
        job = submit(state, lambda model, job: run_completion(model, job, prompt, spec))
    else:  # like Ollama: the prompt goes through the model's chat template
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        job = submit(state, lambda model, job: run_chat(model, job, messages, spec))

    def shape(text: str, final: Any) -> dict[str, Any]:
        line: dict[str, Any] = {"model": name, "created_at": _now(), "response": text}
        if final is not None:
            line["context"] = []  # deprecated in Ollama; the KV cache is reused without it
        return line

    return await _answer(request, state, job, stream, started, shape)


@_ollama_errors
async def embed(request: Request) -> JSONResponse:
    state: ServerState = request.app.state.neuro
    started = time.perf_counter()
    body = await json_body(request)
    retrieval = state.retrieval
    if retrieval is None or not retrieval.can_embed:
        raise APIError(404, "embeddings are off: start the server with --embedder NAME or --storage DIR")
    texts = body.get("input", [])
    texts = [texts] if isinstance(texts, str) else texts
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise APIError(400, "'input' must be a string or a non-empty list of strings")
    if len(texts) > MAX_EMBEDDING_INPUTS:
        raise APIError(400, f"at most {MAX_EMBEDDING_INPUTS} inputs per request")
    try:
        vectors, tokens = await retrieval.embed(texts, query=False)
    except RetrievalBusyError as exc:
        raise APIError(503, f"the server is busy ({exc}); retry shortly", headers={"Retry-After": "1"}) from None
    return JSONResponse({"model": body.get("model") or str(retrieval.embedder_name),
                         "embeddings": [v.tolist() for v in vectors],
                         "total_duration": int((time.perf_counter() - started) * 1e9), "load_duration": 0,
                         "prompt_eval_count": tokens})


def ollama_routes() -> list[Route]:
    """The Ollama API's routes, for ``create_app``."""
    return [
        Route("/api/version", version, methods=["GET"]),
        Route("/api/tags", tags, methods=["GET"]),
        Route("/api/ps", ps, methods=["GET"]),
        Route("/api/show", show, methods=["POST"]),
        Route("/api/chat", chat, methods=["POST"]),
        Route("/api/generate", generate, methods=["POST"]),
        Route("/api/embed", embed, methods=["POST"]),
    ]
