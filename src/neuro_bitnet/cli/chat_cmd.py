"""`neuro chat`: an interactive multi-turn conversation."""

from __future__ import annotations

import click

from neuro_bitnet.answering import DEFAULT_SYSTEM_PROMPT, prepare_turn
from neuro_bitnet.backends.select import BackendRequest, open_backend
from neuro_bitnet.cli import console
from neuro_bitnet.cli.ask_cmd import generation_options, model_options
from neuro_bitnet.cli.line_input import LineReader
from neuro_bitnet.cli.render import AnswerRenderer, loading_spinner
from neuro_bitnet.config import load_settings
from neuro_bitnet.conversation import Conversation, approximate_counter
from neuro_bitnet.errors import EngineError

HELP = ("Commands: /reset (forget the conversation), /system TEXT (new system prompt), /exit. "
        "Ctrl-C stops an answer or clears the line, twice quits; Ctrl-D quits.")
PROMPT = "\001\x1b[32m\002>>>\001\x1b[0m\002 "  # \001..\002 tell readline the colour codes take no room


@click.command("chat")
@model_options
def command(model, max_tokens, temperature, top_p, seed, ctx_size, threads, system, backend, yes, translate,
            reply_in, verbose) -> None:
    """Talk with the model; history is kept until /reset or /exit.

    With --translate each message is translated to English for the model and the answer comes
    in the message's language (or in --reply-in).
    """
    options = generation_options(max_tokens, temperature, top_p, seed)
    request = BackendRequest(kind=backend, model=model, model_given=model is not None, threads=threads,
                             ctx_size=ctx_size, assume_yes=yes,
                             confirm=console.download_question())
    engine = open_backend(request, load_settings(), loading=loading_spinner)
    counter = getattr(engine, "prompt_tokens", None) or approximate_counter(engine.count_tokens)
    budget = max(ctx_size - max_tokens, ctx_size // 2)
    conversation = Conversation(system=system or DEFAULT_SYSTEM_PROMPT)
    reader = LineReader(PROMPT)
    click.secho(f"neuro chat · {engine.model_name} · {engine.name} backend. {HELP}", dim=True, err=True)
    try:
        while True:
            line = reader.read()
            if line is None:
                break
            text = line.strip()
            if not text:
                continue
            if text in ("/exit", "/quit", "/bye"):
                break
            if text == "/reset":
                conversation.reset()
                click.secho("(conversation cleared)", dim=True, err=True)
                continue
            if text.startswith("/system"):
                conversation.system = text[len("/system"):].strip() or DEFAULT_SYSTEM_PROMPT
                conversation.reset()
                click.secho("(system prompt set; conversation cleared)", dim=True, err=True)
                continue
            if text.startswith("/"):
                click.secho(f"unknown command {text.split()[0]}. {HELP}", fg="yellow", err=True)
                continue
            _answer(engine, conversation, text, options, budget, counter, translate, reply_in, verbose)
    finally:
        reader.save()
        engine.close()


def _answer(engine, conversation: Conversation, text: str, options, budget: int, counter, translate: bool,
            reply_in: str, verbose: bool) -> None:
    """One turn: translate if asked, fit the context, stream the answer, remember the exchange."""
    try:
        turn = prepare_turn(engine, text, translate=translate, reply_in=reply_in)
    except KeyboardInterrupt:
        engine.cancel()
        click.secho("\n(stopped)", dim=True, err=True)
        return
    if verbose and turn.detection is not None:
        click.secho(f"language: {turn.detection.language} ({turn.detection.confidence:.2f})", err=True, dim=True)
    if verbose and turn.translated_question:
        click.secho(f"translated: {turn.translated_question}", err=True, dim=True)
    dropped = conversation.fit(turn.text, budget, counter)
    if dropped:
        click.secho(f"(dropped {dropped} oldest exchange(s) to fit the context)", dim=True, err=True)
    messages = conversation.messages(turn.text)
    messages[0] = {"role": "system", "content": conversation.system + turn.system_suffix}
    pieces = engine.chat(messages, options)
    try:
        answer = AnswerRenderer(stream=True).render(pieces)
    except KeyboardInterrupt:
        engine.cancel()
        click.secho("\n(stopped)", dim=True, err=True)
        return
    except EngineError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        return
    finally:
        pieces.close()
    conversation.add_exchange(turn.text, answer.strip())
