"""Turning a question into chat messages: translation, document and web context, sources."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from neuro_bitnet.backends.base import Backend
from neuro_bitnet.language import Detection
from neuro_bitnet.language.translate import reply_instruction, reply_language, to_english
from neuro_bitnet.retrieval.grounding import CountTokens, GroundedContext, fit_sources, grounded_question, hit_source

DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant. Answer clearly and concisely."
CONTEXT_BUDGET = 1024  # tokens of retrieved passages at most
TEMPLATE_RESERVE = 8  # tokens the chat format adds per message (role headers, end markers)
SEARCH_TOP_K = 8  # passages searched for a grounded answer (as many as fit are used)


def grounded_messages(question: str, hits: list[dict], count_tokens: CountTokens, *, ctx_size: int,
                      max_tokens: int, history: list[dict[str, str]] | None = None,
                      budget: int = CONTEXT_BUDGET) -> tuple[list[dict[str, str]], GroundedContext]:
    """The chat of a question grounded on search ``hits`` (best first) and the sources it cites.

    As many passages as fit are numbered and cited as [n], as `neuro ask --storage` does: at most
    ``budget`` tokens, and what the context of ``ctx_size`` tokens leaves beside the rest of
    the prompt and an answer of ``max_tokens``. ``history`` (the conversation before the
    question) keeps its own system prompt; without one the default system prompt leads.
    """
    history = list(history or [])
    if not any(m.get("role") in ("system", "developer") for m in history):
        history.insert(0, {"role": "system", "content": DEFAULT_SYSTEM_PROMPT})
    frame = grounded_question(question, GroundedContext([{"n": 0, "kind": "file", "path": "", "text": ""}]))
    fixed = sum(count_tokens(m["content"]) for m in history) + count_tokens(frame)
    room = ctx_size - max_tokens - fixed - TEMPLATE_RESERVE * (len(history) + 2)
    budget = min(budget, room)
    context = GroundedContext(fit_sources([hit_source(h) for h in hits], budget, count_tokens) if budget > 0 else [])
    return [*history, {"role": "user", "content": grounded_question(question, context)}], context


@dataclass
class AskRequest:
    """Everything `neuro ask` was asked to do, independent of how it is shown."""

    question: str
    system: str | None = None
    translate: bool = False
    reply_in: str = "auto"  # "auto": the question's language; or a language code such as "en"
    context_budget: int = CONTEXT_BUDGET  # tokens of retrieved text at most


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
        user = grounded_question(question, context)

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
