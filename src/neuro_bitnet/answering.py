"""Turning a question into chat messages: translation, document and web context, sources."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from neuro_bitnet.backends.base import Backend
from neuro_bitnet.language import Detection
from neuro_bitnet.language.translate import reply_instruction, reply_language, to_english
from neuro_bitnet.retrieval.grounding import GroundedContext

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant. Answer clearly and concisely."


@dataclass
class AskRequest:
    """Everything `neuro ask` was asked to do, independent of how it is shown."""

    question: str
    system: str | None = None
    translate: bool = False
    reply_in: str = "auto"  # "auto": the question's language; or a language code such as "en"
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

    turn = prepare_turn(backend, question, translate=request.translate, reply_in=request.reply_in)
    prepared.detection = turn.detection
    prepared.translated_question = turn.translated_question
    question = turn.text
    system += turn.system_suffix

    user = question
    if retrieve is not None:
        context = retrieve(original, request.context_budget)
        prepared.sources = context.sources
        prepared.notes = [context.note] if context.note else []
        if not context.is_empty():
            user = f"{context.instructions}\n\nSources:\n{context.prompt_block}\n\nQuestion: {question}"

    prepared.messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    return prepared


@dataclass
class PreparedTurn:
    """One user turn as the model sees it: English text with --translate, and the reply rule."""

    text: str
    system_suffix: str = ""  # appended to the system prompt: the language of the answer
    detection: Detection | None = None
    translated_question: str | None = None


def prepare_turn(backend: Backend, text: str, *, translate: bool, reply_in: str) -> PreparedTurn:
    """Apply ``--translate`` and ``--reply-in`` to one user text (shared by `ask` and `chat`).

    With ``translate`` a non-English text is translated to English and the answer is asked for in
    the user's language (``reply_in="auto"``) or in ``reply_in``; without it ``reply_in`` other
    than auto asks for that language.
    """
    turn = PreparedTurn(text=text)
    if translate:
        result = to_english(backend, text)
        turn.detection = result.detection
        if result.translated:
            turn.text = result.text
            turn.translated_question = result.text
    turn.system_suffix = reply_instruction(reply_language(reply_in, turn.detection))
    return turn
