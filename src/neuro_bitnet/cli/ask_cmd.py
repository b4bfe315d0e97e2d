"""`neuro ask`: one question, one answer, streamed."""

from __future__ import annotations

import json
import os
import select
import stat
import sys
from dataclasses import replace

import click

from neuro_bitnet.answering import AskRequest, prepare_ask
from neuro_bitnet.backends.select import BACKENDS, BackendRequest, open_backend
from neuro_bitnet.cli import console
from neuro_bitnet.cli.json_schema_option import json_schema_options, load_json_schema
from neuro_bitnet.cli.render import AnswerRenderer, loading_spinner
from neuro_bitnet.cli.timing import AnswerTimer, format_timing
from neuro_bitnet.config import load_settings
from neuro_bitnet.engine.options import DEFAULT_CTX_SIZE, DEFAULT_MAX_TOKENS, DEFAULT_SAMPLING, GenerationOptions
from neuro_bitnet.errors import ConfigError, EngineError
from neuro_bitnet.language.detect import SUPPORTED_LANGUAGES
from neuro_bitnet.language.translate import check_language

STDIN_NOTICE_SECONDS = 1.0  # say that stdin is being read when nothing came in this long


def read_piped_stdin() -> str:
    """Text piped into the command (`cat notes.txt | neuro ask ...`); "" for a terminal or nothing.

    When a pipe stays silent for a moment, a line on stderr says that the command is waiting for
    it (the writer may be slow, or the pipe is there by accident: `< /dev/null` skips it).
    """
    try:
        mode = os.fstat(sys.stdin.fileno()).st_mode
    except (OSError, ValueError, AttributeError):
        return ""
    if stat.S_ISREG(mode):
        return sys.stdin.read()
    if not stat.S_ISFIFO(mode):
        return ""
    ready, _, _ = select.select([sys.stdin], [], [], STDIN_NOTICE_SECONDS)
    if not ready:
        click.secho("waiting for text on stdin (it is added to the question; end it with Ctrl-D, "
                    "or run with < /dev/null to skip it)...", dim=True, err=True)
    return sys.stdin.read()


def generation_options(max_tokens: int, temperature: float, top_p: float, seed: int | None) -> GenerationOptions:
    if max_tokens < 1:
        raise click.BadParameter("must be >= 1", param_hint="--max-tokens")
    try:
        return GenerationOptions(max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed)
    except EngineError as exc:  # the engine's own validation of the sampling settings
        raise click.UsageError(str(exc)) from None


def _check_reply_in(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if value == "auto":
        return value
    try:
        return check_language(value)
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None


def model_options(func):
    """Options shared by `ask` and `chat`."""
    options = [
        click.option("--model", "-m", default=None, help="Catalog id, alias or path to a .gguf [default: 2b]."),
        click.option("--max-tokens", "-n", default=DEFAULT_MAX_TOKENS, show_default=True,
                     help="Longest answer, in tokens."),
        click.option("--temperature", "-t", default=DEFAULT_SAMPLING.temperature, show_default=True,
                     help="0 = greedy."),
        click.option("--top-p", default=DEFAULT_SAMPLING.top_p, show_default=True, help="Nucleus sampling threshold."),
        click.option("--seed", default=None, type=int, help="Random seed for reproducible sampling."),
        click.option("--ctx-size", "-c", default=DEFAULT_CTX_SIZE, show_default=True, help="Context window in tokens."),
        click.option("--threads", default=None, type=int, help="CPU threads [default: physical cores]."),
        click.option("--system", default=None, help="System prompt."),
        click.option("--backend", type=click.Choice(BACKENDS), default="auto", show_default=True,
                     help="auto: a running daemon, else native."),
        click.option("--yes", "-y", is_flag=True, help="Download a missing model without asking."),
        click.option("--translate", is_flag=True, help="Translate a non-English question to English first."),
        click.option("--reply-in", default="auto", show_default=True, callback=_check_reply_in,
                     help="Language of the answer: auto (with --translate, the question's) or a code: "
                          + ", ".join(SUPPORTED_LANGUAGES) + "."),
        click.option("--verbose", "-v", is_flag=True, help="Show what happens (and tracebacks on errors)."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@click.command("ask")
@click.argument("question", required=False)
@model_options
@click.option("--stream/--no-stream", default=True, show_default=True, help="Show tokens as they come.")
@click.option("--timing", is_flag=True, help="Print load time, token counts and speeds.")
@click.option("--storage", default=None, metavar="DIR|URL",
              help="Answer from documents indexed here (a folder or a postgresql:// URL).")
@click.option("--web", is_flag=True, help="Add web search results as context.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (answer, usage, timings).")
@json_schema_options[0]
@json_schema_options[1]
def command(question, model, max_tokens, temperature, top_p, seed, ctx_size, threads, system, backend, yes,
            translate, reply_in, verbose, stream, timing, storage, web, as_json, json_schema_file, json_object) -> None:
    """Ask the model one QUESTION (text piped on stdin is added to it)."""
    settings = load_settings()
    from neuro_bitnet.cli.context import check_sources, make_retriever

    if storage is not None:
        from neuro_bitnet.retrieval.paths import resolve_storage

        storage = resolve_storage(storage)
    check_sources(storage=storage, web=web, settings=settings)  # before stdin and the model load
    piped = read_piped_stdin()
    if piped.strip():
        question = f"{question}\n\n{piped.strip()}" if question else piped.strip()
    if not question or not question.strip():
        raise click.UsageError("give a question, e.g. neuro ask \"What is BitNet?\"")
    options = generation_options(max_tokens, temperature, top_p, seed)
    options = replace(options, json_schema=load_json_schema(json_schema_file, json_object))
    timer = AnswerTimer()

    request = BackendRequest(kind=backend, model=model, model_given=model is not None, threads=threads,
                             ctx_size=ctx_size, assume_yes=yes,
                             confirm=console.download_question())
    engine = open_backend(request, settings, loading=loading_spinner)
    timer.loaded()
    try:
        retrieve = None
        if storage is not None or web:
            retrieve = make_retriever(storage=storage, web=web, settings=settings, count_tokens=engine.count_tokens)
        ask = AskRequest(question=question, system=system, translate=translate, reply_in=reply_in)
        prepared = prepare_ask(engine, ask, retrieve=retrieve)
        for note in prepared.notes:
            click.secho(note, fg="yellow", err=True)
        if verbose and prepared.detection is not None:
            detection = prepared.detection
            click.secho(f"language: {detection.language} ({detection.confidence:.2f})", err=True, dim=True)
        if verbose and prepared.translated_question:
            click.secho(f"translated question: {prepared.translated_question}", err=True, dim=True)

        timer.generation_started()
        stream_of_pieces = engine.chat(prepared.messages, options)
        pieces = timer.watch(stream_of_pieces)
        interrupted = False
        try:
            if as_json:
                answer = "".join(pieces)
            else:
                answer = AnswerRenderer(stream=stream).render(pieces)
        except KeyboardInterrupt:
            engine.cancel()
            interrupted = True
            answer = ""
        finally:
            stream_of_pieces.close()
        timer.finished()
        stats = stream_of_pieces.result
        if as_json:
            click.echo(json.dumps(_json_result(answer.strip(), engine, prepared, stats, timer), ensure_ascii=False))
        else:
            _print_sources(prepared.sources)
            if timing:
                click.echo(format_timing(stats, timer), err=True)
        if interrupted:
            click.echo("Interrupted.", err=True)
            sys.exit(130)
    finally:
        engine.close()


def _print_sources(sources: list[dict]) -> None:
    from neuro_bitnet.retrieval.grounding import source_header

    if sources:
        click.echo("\nSources:")
        for src in sources:
            click.echo("  " + source_header(src))


def _json_result(answer, engine, prepared, stats, timer) -> dict:
    return {
        "answer": answer,
        "model": engine.model_name,
        "backend": engine.name,
        "finish_reason": stats.finish_reason,
        "usage": {
            "prompt_tokens": stats.prompt_tokens,
            "completion_tokens": stats.generated_tokens,
            "total_tokens": stats.prompt_tokens + stats.generated_tokens,
        },
        "timings": timer.as_dict(stats),
        "language": prepared.detection.language if prepared.detection else None,
        "translated_question": prepared.translated_question,
        "sources": prepared.sources,
    }
