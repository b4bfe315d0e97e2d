"""Turning a question into chat messages: translation, document and web context, sources."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from neuro_bitnet.backends.base import Backend
from neuro_bitnet.language import Detection, detect_language, language_name, translate_with_backend
from neuro_bitnet.retrieval.grounding import GroundedContext

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant. Answer clearly and concisely."


@dataclass
class AskRequest:
    """Everything `neuro ask` was asked to do, independent of how it is shown."""

    question: str
    system: str | None = None
    translate: bool = False
    reply_in: str = "auto"  # "auto": the question's language; or a language code such as "en"
    storage: Path | None = None
    web: bool = False
    context_budget: int = 1024  # tokens of retrieved text at most


@dataclass
class PreparedAsk:
    """The messages to send, plus what was learned on the way (for --verbose and --json)."""

    messages: list[dict[str, str]]
    detection: Detection | None = None
    translated_question: str | None = None
    sources: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def prepare_ask(
    backend: Backend,
    request: AskRequest,
    *,
    retrieve: Callable[[str, int], GroundedContext] | None = None,
) -> PreparedAsk:
    """Build the chat messages for ``request``.

    ``retrieve(question, budget)`` returns the numbered sources for the question (in the user's
    own words: search is multilingual and the web provider picks its language from them); it is
    given when ``--storage`` or ``--web`` asks for context.
    """
    original = question = request.question.strip()
    prepared = PreparedAsk(messages=[])
    system = request.system or DEFAULT_SYSTEM_PROMPT

    if request.translate:
        detection = detect_language(question)
        prepared.detection = detection
        if not detection.is_english:
            english = translate_with_backend(backend, question, detection.language, "en")
            prepared.translated_question = english
            question = english
        reply = detection.language if request.reply_in == "auto" else request.reply_in
        if reply != "en":
            system += f" Always reply in {language_name(reply)}."
    elif request.reply_in not in ("auto", "en"):
        system += f" Always reply in {language_name(request.reply_in)}."

    user = question
    if retrieve is not None:
        context = retrieve(original, request.context_budget)
        prepared.sources = context.sources
        prepared.notes = [context.note] if context.note else []
        if not context.is_empty():
            user = f"{context.instructions}\n\nSources:\n{context.prompt_block}\n\nQuestion: {question}"

    prepared.messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    return prepared
