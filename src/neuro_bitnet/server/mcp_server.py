"""The MCP server (``neuro mcp``): the model as tools for editors and agents, over stdio.

Tools: ``ask``, ``generate``, ``translate``, ``summarize`` and, when an index is configured,
``search_documents``. The model loads on the first tool call (so the editor's handshake is
instant) and runs on the same worker as the HTTP daemon (FIFO, up to ``--parallel`` answers
decoded together). Failures the user can act on (a file that is not a model, a busy index...)
come back as one-line tool errors.
"""

from __future__ import annotations

import asyncio
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mcp.server.mcpserver.exceptions import ToolError

from neuro_bitnet.answering import SEARCH_TOP_K, grounded_messages
from neuro_bitnet.engine.options import DEFAULT_CTX_SIZE
from neuro_bitnet.errors import NeuroError
from neuro_bitnet.server.generation import GenerationSpec, ServedAnswer, run_chat, run_completion, token_counter
from neuro_bitnet.server.schemas import DEFAULT_SAMPLING
from neuro_bitnet.server.worker import DONE, ERROR, Job, ModelWorker

MAX_TOOL_TOKENS = 2048
SEARCH_CONTEXT_CHARS = 6000
ASK_TEMPERATURE = 0.3  # `ask` answers from facts: cooler than the engine default


@dataclass
class MCPSettings:
    """How ``neuro mcp`` finds its model and index."""

    model: str | None = None
    threads: int | None = None
    ctx_size: int = DEFAULT_CTX_SIZE
    parallel: int | None = None  # requests answered at once (None: the machine's default)
    storage: Path | str | None = None  # index directory or postgresql:// URL
    embedder: str | None = None
    assume_yes: bool = False


class ModelRunner:
    """Loads the model once, on first use, and runs requests on a FIFO worker."""

    def __init__(self, settings: MCPSettings) -> None:
        self.settings = settings
        self._worker: ModelWorker | None = None
        self._lock = asyncio.Lock()
        self.model_id: str | None = None
        self._resolved: tuple[Path, Any] | None = None

    def resolve(self) -> None:
        """Find (or download, with ``assume_yes``) the model file now, so errors show at start."""
        from neuro_bitnet.server.model_loader import resolve_model

        self._resolved = resolve_model(self.settings.model, assume_yes=self.settings.assume_yes)

    async def _ensure(self) -> ModelWorker:
        async with self._lock:
            if self._worker is None:
                try:
                    self._worker = await asyncio.to_thread(self._load)
                except NeuroError as exc:  # e.g. "model.gguf: not a GGUF file": the CLI's message
                    raise ToolError(str(exc)) from None
        return self._worker

    def _load(self) -> ModelWorker:
        from neuro_bitnet.server.model_loader import load

        if self._resolved is None:
            self.resolve()
        assert self._resolved is not None
        path, info = self._resolved
        model = load(path, info, threads=self.settings.threads, ctx_size=self.settings.ctx_size,
                     parallel=self.settings.parallel)
        self.model_id = info.id
        return ModelWorker(model)

    async def run(self, fn: Callable[[Any, Job], ServedAnswer]) -> ServedAnswer:
        """Run ``fn(model, job)`` on the worker; cancelling the caller cancels the generation."""
        worker = await self._ensure()
        job = worker.submit(fn)
        try:
            async for kind, value in job.events():
                if kind == DONE:
                    return value
                if kind == ERROR:
                    raise _tool_error(value)
        except asyncio.CancelledError:
            worker.cancel(job)
            raise
        raise RuntimeError("the model worker stopped")

    def close(self) -> None:
        if self._worker is not None:
            self._worker.close()


def _tool_error(exc: BaseException) -> Exception:
    from neuro_bitnet.server.errors import APIError
    from neuro_bitnet.server.retrieval_service import RetrievalBusyError

    if isinstance(exc, APIError):
        return ToolError(exc.message)
    if isinstance(exc, (NeuroError, RetrievalBusyError)):
        return ToolError(str(exc))
    return exc if isinstance(exc, Exception) else RuntimeError(str(exc))


def _one_line_errors(tool: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the errors a user can act on into ToolError (one line, no traceback in the log)."""
    @functools.wraps(tool)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await tool(*args, **kwargs)
        except ToolError:
            raise
        except Exception as exc:
            error = _tool_error(exc)
            if error is exc:
                raise
            raise error from None
    return wrapper


def _spec(max_tokens: int, temperature: float, **extra: Any) -> GenerationSpec:
    """A tool's generation: ``max_tokens`` within the tools' budget; GenerationSpec checks the
    temperature against the server's ranges (an APIError, which the tools turn into a ToolError)."""
    if not 1 <= max_tokens <= MAX_TOOL_TOKENS:
        raise ToolError(f"max_tokens must be between 1 and {MAX_TOOL_TOKENS}")
    sampling = dict(DEFAULT_SAMPLING, temperature=temperature, seed=None)
    return GenerationSpec(max_tokens=max_tokens, sampling=sampling, **extra)


def build_server(settings: MCPSettings) -> Any:
    """The MCPServer with its tools (``search_documents`` only when an index is configured)."""
    from mcp.server.mcpserver import MCPServer

    from neuro_bitnet import __version__

    runner = ModelRunner(settings)
    retrieval = None
    if settings.storage is not None:
        from neuro_bitnet.server.retrieval_service import RetrievalService

        retrieval = RetrievalService(storage=settings.storage, embedder=settings.embedder)

    server = MCPServer(
        name="neuro-bitnet",
        version=__version__,
        instructions="A local BitNet b1.58 language model running on this machine's CPU. Small model: "
        "keep requests short and concrete; use search_documents (when present) for the user's files.",
        log_level="WARNING",
    )

    async def chat(messages: list[dict[str, str]], max_tokens: int, temperature: float, translate: bool = False) -> str:
        spec = _spec(max_tokens, temperature, translate=translate)
        result = await runner.run(lambda model, job: run_chat(model, job, messages, spec))
        return result.text.strip()

    @server.tool(description="Answer a question with the local model. With an index configured, the answer "
                             "is grounded on the best matching document passages (use_documents), cited as [n].")
    @_one_line_errors
    async def ask(question: str, max_tokens: int = 256, temperature: float = ASK_TEMPERATURE,
                  use_documents: bool = True, translate: bool = False) -> str:
        spec = _spec(max_tokens, temperature, translate=translate)
        hits = await retrieval.search(question, SEARCH_TOP_K) if retrieval is not None and use_documents else []

        def work(model: Any, job: Job) -> ServedAnswer:
            messages, _ = grounded_messages(question, hits, token_counter(model), ctx_size=model.ctx_size,
                                            max_tokens=max_tokens)
            return run_chat(model, job, messages, spec)

        return (await runner.run(work)).text.strip()

    @server.tool(description="Continue a raw text prompt (plain completion, no chat formatting).")
    @_one_line_errors
    async def generate(prompt: str, max_tokens: int = 128, temperature: float = DEFAULT_SAMPLING["temperature"],
                       stop: list[str] | None = None) -> str:
        spec = _spec(max_tokens, temperature, stop=[s for s in stop or [] if s])
        result = await runner.run(lambda model, job: run_completion(model, job, prompt, spec))
        return result.text

    @server.tool(description="Translate text into another language (ISO code such as en, es, fr, de).")
    @_one_line_errors
    async def translate(text: str, target_language: str = "en", source_language: str | None = None) -> str:
        from neuro_bitnet.errors import ConfigError
        from neuro_bitnet.language import detect_language, translate_with_backend
        from neuro_bitnet.language.translate import check_language
        from neuro_bitnet.server.generation import _EngineBackend

        try:
            source = check_language(source_language) if source_language else detect_language(text).language
            target = check_language(target_language)
        except ConfigError as exc:
            raise ToolError(str(exc)) from None

        def work(model: Any, job: Job) -> ServedAnswer:
            out = translate_with_backend(_EngineBackend(model), text, source, target)
            return ServedAnswer(text=out, finish_reason="stop")

        return (await runner.run(work)).text

    @server.tool(description="Summarize a text in a few sentences.")
    @_one_line_errors
    async def summarize(text: str, max_words: int = 80) -> str:
        if not text.strip():
            raise ToolError("text is empty")
        messages = [
            {"role": "system", "content": "You summarize texts accurately and briefly."},
            {"role": "user", "content": f"Summarize the following text in at most {max_words} words:\n\n{text}"},
        ]
        return await chat(messages, min(MAX_TOOL_TOKENS, max(32, 2 * max_words)), 0.2)

    if retrieval is not None:
        @server.tool(description="Search the indexed documents; returns the best matching passages with "
                                 "their file paths and locations.")
        @_one_line_errors
        async def search_documents(query: str, top_k: int = 5) -> str:
            if not 1 <= top_k <= 50:
                raise ToolError("top_k must be between 1 and 50")
            hits = await retrieval.search(query, top_k)
            return _passages(hits) if hits else "No matching passages."

    server.neuro_runner = runner  # type: ignore[attr-defined]
    return server


def _passages(hits: list[dict[str, Any]]) -> str:
    """Numbered passages with their sources, within a size budget."""
    parts, used = [], 0
    for n, hit in enumerate(hits, 1):
        where = f"{hit['path']}" + (f" ({hit['location']})" if hit.get("location") else "")
        block = f"[{n}] {where}\n{hit['text'].strip()}"
        if used + len(block) > SEARCH_CONTEXT_CHARS and parts:
            break
        parts.append(block)
        used += len(block)
    return "\n\n".join(parts)


def run_stdio(settings: MCPSettings) -> None:
    """Serve MCP over stdin/stdout until the client closes the pipe."""
    import anyio

    from neuro_bitnet.server.mcp_stdio import serve

    server = build_server(settings)
    server.neuro_runner.resolve()
    try:
        anyio.run(serve, server)
    finally:
        server.neuro_runner.close()
