"""`neuro chat`: an interactive multi-turn conversation."""

from __future__ import annotations

import click

from neuro_bitnet.answering import DEFAULT_SYSTEM_PROMPT
from neuro_bitnet.backends.select import BackendRequest, open_backend
from neuro_bitnet.cli.ask_cmd import generation_options, model_options
from neuro_bitnet.cli.render import AnswerRenderer
from neuro_bitnet.config import load_settings
from neuro_bitnet.conversation import Conversation, approximate_counter
from neuro_bitnet.errors import EngineError

HELP = "Commands: /reset (forget the conversation), /system TEXT (new system prompt), /exit. Ctrl-C stops an answer."


@click.command("chat")
@model_options
def command(model, max_tokens, temperature, top_p, seed, ctx_size, threads, system, backend, yes, translate,
            reply_in, verbose) -> None:
    """Talk with the model; history is kept until /reset or /exit."""
    options = generation_options(max_tokens, temperature, top_p, seed)
    request = BackendRequest(kind=backend, model=model, model_given=model is not None, threads=threads,
                             ctx_size=ctx_size, assume_yes=yes)
    engine = open_backend(request, load_settings())
    counter = getattr(engine, "prompt_tokens", None) or approximate_counter(engine.count_tokens)
    budget = max(ctx_size - max_tokens, ctx_size // 2)
    conversation = Conversation(system=system or DEFAULT_SYSTEM_PROMPT)
    click.secho(f"neuro chat · {engine.model_name} · {engine.name} backend. {HELP}", dim=True, err=True)
    try:
        while True:
            try:
                line = click.prompt(click.style(">>>", fg="green"), prompt_suffix=" ", default="",
                                    show_default=False)
            except (EOFError, click.exceptions.Abort):
                click.echo(err=True)
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
            dropped = conversation.fit(text, budget, counter)
            if dropped:
                click.secho(f"(dropped {dropped} oldest exchange(s) to fit the context)", dim=True, err=True)
            pieces = engine.chat(conversation.messages(text), options)
            try:
                answer = AnswerRenderer(stream=True).render(pieces)
            except KeyboardInterrupt:
                engine.cancel()
                click.secho("\n(stopped)", dim=True, err=True)
                continue
            except EngineError as exc:
                click.secho(f"error: {exc}", fg="red", err=True)
                continue
            finally:
                pieces.close()
            conversation.add_exchange(text, answer.strip())
    finally:
        engine.close()
