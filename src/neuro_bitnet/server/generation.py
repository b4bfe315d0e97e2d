"""What the model thread does for one request: prompt tokens, generation, optional translation.

Everything here runs on a job thread of the worker (see :mod:`neuro_bitnet.server.worker`), with
the model as a job sees it (``batching.JobModel``): tokenizing and chat templates run on the job's
thread, generations in the model's shared batch.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Sequence

from neuro_bitnet.config import pause_point
from neuro_bitnet.engine.constrained import Grammar, GrammarError
from neuro_bitnet.engine.decoding import check_prompt_fits as engine_check_prompt_fits
from neuro_bitnet.engine.sampling import SamplingParams
from neuro_bitnet.engine.stats import AnswerResult
from neuro_bitnet.errors import EngineError
from neuro_bitnet.server.errors import APIError
from neuro_bitnet.server.limits import check_sampling
from neuro_bitnet.server.worker import Job

log = logging.getLogger("neuro_bitnet.server")


@dataclass
class GenerationSpec:
    """A validated request, ready for the model."""

    max_tokens: int
    sampling: dict[str, Any]
    stop: list[str] = field(default_factory=list)
    translate: bool = False
    grammar: Grammar | None = None  # constrained output (response_format, tools)

    def __post_init__(self) -> None:
        """The API's ranges for the sampling values (``limits.SAMPLING_LIMITS``), then the
        engine's own rule: a value either refuses is the client's mistake, a 400, not a failure
        of the model."""
        check_sampling(self.sampling)
        try:
            SamplingParams(**self.sampling)
        except EngineError as exc:
            raise APIError(400, f"invalid sampling settings: {exc}", code="invalid_sampling") from None


@dataclass
class ServedAnswer(AnswerResult):
    """The engine's answer (its text, counts and timings) plus what the daemon adds to it."""

    language: str | None = None  # the user's language when the answer was translated
    first_piece_at: float | None = None  # time.perf_counter() when the first text was ready
    sources: list[dict] | None = None  # a grounded answer's numbered sources

    @classmethod
    def of(cls, answer: AnswerResult, **served: Any) -> "ServedAnswer":
        """``answer`` with the daemon's fields ``served``."""
        return cls(**{f.name: getattr(answer, f.name) for f in fields(AnswerResult)}, **served)

    def timings(self) -> dict[str, Any]:
        """llama-server-style speed figures of the generation (the first answer token comes from
        the prefill, so decoding made ``generated_tokens - 1`` steps)."""
        evaluated = self.prompt_tokens - self.cached_tokens
        steps = max(self.generated_tokens - 1, 0)
        return {
            "prompt_n": evaluated,
            "prompt_ms": round(self.prefill_seconds * 1000, 3),
            "prompt_per_second": round(evaluated / self.prefill_seconds, 3) if self.prefill_seconds > 0 else None,
            "predicted_n": self.generated_tokens,
            "predicted_ms": round(self.decode_seconds * 1000, 3),
            "predicted_per_second": (round(steps / self.decode_seconds, 3)
                                     if self.decode_seconds > 0 and steps else None),
        }

    def usage(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.generated_tokens,
            "total_tokens": self.prompt_tokens + self.generated_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }


def token_counter(model: Any) -> Callable[[str], int]:
    """Counts the tokens of a text with ``model``'s tokenizer (no BOS): fits passages to a budget."""
    return lambda text: len(model.tokenize(text, add_bos=False))


def chat_prompt_ids(model: Any, job: Job, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of the chat prompt (the engine's one chat rule); a client that goes away
    stops a slow chat template. A conversation the template refuses (roles out of order...)
    is a 400."""
    try:
        return model.chat_prompt_ids(messages, cancelled=job.cancelled.is_set)
    except EngineError as exc:  # the engine's report of a chat the format refuses
        job.check()  # stopped because the client left: report a cancellation
        raise APIError(400, f"the messages cannot be formatted for this model: {exc}", param="messages",
                       code="invalid_messages") from None


def run_chat(model: Any, job: Job, messages: list[dict[str, str]], spec: GenerationSpec) -> ServedAnswer:
    """Answer a conversation, streaming pieces through ``job`` (translated answers come whole)."""
    language = None
    if spec.translate:
        language, messages = _translate_question(model, job, messages)
    ids = chat_prompt_ids(model, job, messages)
    return _answer(model, job, ids, spec, language)


def run_completion(model: Any, job: Job, prompt: str | list[int], spec: GenerationSpec) -> ServedAnswer:
    """Continue a raw prompt (text, tokenized with BOS, or token ids used as given)."""
    language = None
    if spec.translate and isinstance(prompt, str):
        from neuro_bitnet.language.translate import to_english

        english = to_english(_EngineBackend(model), prompt, job.check)
        language, prompt = (english.detection.language, english.text) if english.translated else (None, prompt)
    ids = model.tokenize(prompt, add_bos=True) if isinstance(prompt, str) else list(prompt)
    return _answer(model, job, ids, spec, language)


def _answer(model: Any, job: Job, ids: list[int], spec: GenerationSpec, language: str | None) -> ServedAnswer:
    """Generate from ``ids``; for a translated question (``language``), translate the English
    answer back and send it whole."""
    result = _generate(model, job, ids, spec, stream=language is None)
    if language is not None:
        result.text = _translate(model, result.text, source="en", target=language, check=job.check)
        result.language = language
        result.first_piece_at = time.perf_counter()
        job.emit(result.text)
    return result


def check_prompt_fits(n_prompt: int, ctx_size: int, param: str = "messages") -> None:
    """The engine's rule for a prompt's length (``engine.decoding.check_prompt_fits``: room for
    at least one answer token) as a 400 ``context_length_exceeded``; an empty prompt is a 400 too."""
    if n_prompt == 0:
        raise APIError(400, "the prompt is empty", param="prompt")
    try:
        engine_check_prompt_fits(n_prompt, ctx_size)
    except EngineError as exc:
        raise APIError(400, str(exc), code="context_length_exceeded", param=param) from None


def _generate(model: Any, job: Job, ids: Sequence[int], spec: GenerationSpec, *, stream: bool) -> ServedAnswer:
    check_prompt_fits(len(ids), model.ctx_size)
    max_tokens = min(spec.max_tokens, model.ctx_size - len(ids))
    job.check()
    extra = {"grammar": spec.grammar} if spec.grammar is not None else {}
    try:
        tokens = model.generate(list(ids), max_tokens=max_tokens, stop=spec.stop or None, **spec.sampling, **extra)
    except GrammarError as exc:  # a schema the grammar checker passed but this vocabulary cannot follow
        raise APIError(400, str(exc), param="response_format", code="invalid_schema") from None
    first_piece_at = None
    try:
        for piece in tokens:
            if first_piece_at is None:
                first_piece_at = time.perf_counter()
            if stream:
                job.emit(piece)
            else:
                job.check()
            if piece.strip():  # test-only hold after each piece of visible text (config.pause_point)
                pause_point("generation", job.cancelled)
    finally:
        tokens.close()
    job.check()  # the engine stops quietly when cancelled; report it as a cancellation
    result = ServedAnswer.of(tokens.result, first_piece_at=first_piece_at)
    result.finish_reason = "length" if result.finish_reason == "length" else "stop"
    return result


# -- translation --------------------------------------------------------------------------------
def _translate(model: Any, text: str, *, source: str, target: str,
               check: Callable[[], None] | None = None) -> str:
    from neuro_bitnet.language import translate_with_backend

    return translate_with_backend(_EngineBackend(model), text, source, target, check)


def _translate_question(
    model: Any, job: Job, messages: list[dict[str, str]]
) -> tuple[str | None, list[dict[str, str]]]:
    """Translate the last user message to English; returns (user language or None, messages)."""
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    if last_user is None:
        return None, messages
    from neuro_bitnet.language.translate import to_english

    job.check()
    result = to_english(_EngineBackend(model), messages[last_user]["content"], job.check)
    if not result.translated:
        return None, messages
    language, english = result.detection.language, result.text
    log.info("translated a %s question to English", language)
    messages = [dict(m) for m in messages]
    messages[last_user]["content"] = english
    return language, messages


class _EngineBackend:
    """The little of the Backend interface that translation needs, over a loaded model."""

    name = "daemon-worker"

    def __init__(self, model: Any) -> None:
        self.model = model
        self.model_name = getattr(model, "name", "model")
        self.ctx_size = model.ctx_size

    def chat(self, messages: list[dict[str, str]], options: Any):
        return self.model.chat(messages, **options.engine_kwargs())
