"""The token rules of one generation, from a row of logits to the next token and its text.

One definition for every path that generates: ``BitNetModel.generate`` (one sequence) and
``BatchScheduler`` (several sequences per forward pass) both feed each row of logits to a
:class:`Decoding`, which applies, in order: the grammar mask (constrained output), sampling,
end-of-generation tokens, the grammar's completion, stop strings, the context's end and
``max_tokens``. What it decides goes into the generation's :class:`AnswerResult`; at its end the
answer's token ids go to ``remember`` (the chat format's memory of answers, so that a chat's next
turn holding this answer gets the very ids its KV cache holds).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from neuro_bitnet.engine.constrained import GrammarConstraint
from neuro_bitnet.engine.sampling import Sampler
from neuro_bitnet.engine.stats import AnswerResult
from neuro_bitnet.engine.stop_strings import StopStringFilter
from neuro_bitnet.engine.tokenizer import StreamDecoder, Tokenizer
from neuro_bitnet.errors import EngineError

NON_FINITE = ("the model computed NaN or infinite logits: its weights are broken "
              "(non-finite or huge values in the file)")


def check_prompt_fits(n_prompt: int, ctx_size: int) -> None:
    """A generation's prompt must leave room in the context for at least one answer token:
    EngineError when its ``n_prompt`` tokens fill (or pass) the ``ctx_size`` positions."""
    if n_prompt >= ctx_size:
        raise EngineError(
            f"the prompt has {n_prompt} tokens, but the model's context holds {ctx_size} and the answer "
            "needs at least one: shorten the prompt or use a larger --ctx-size"
        )


class Decoding:
    """One generation's state: the sequence so far (``history``: prompt then answer), its sampler,
    grammar, stop strings and text decoder. Feed it the logits after ``history[-1]`` with
    :meth:`push` until ``done``; end with :meth:`finish`, which hands the answer's ids to
    ``remember``."""

    def __init__(self, ids: list[int], *, max_tokens: int, ctx_size: int, sampler: Sampler, stops: list[str],
                 tokenizer: Tokenizer, result: AnswerResult, constraint: GrammarConstraint | None = None,
                 remember: Callable[[Sequence[int]], None] | None = None) -> None:
        self.prompt_ids = ids
        self.history = list(ids)
        self.max_tokens = max_tokens
        self.ctx_size = ctx_size
        self.result = result
        self._sampler = sampler
        self._stop_ids = tokenizer.stop_ids
        self._filter = StopStringFilter(stops)
        self._decoder = StreamDecoder(tokenizer)
        self._constraint = constraint
        self._remember = remember
        self.done = max_tokens == 0
        self.result.finish_reason = "length" if self.done else ""

    def push(self, logits: np.ndarray) -> str:
        """Choose the next token from ``logits``; returns the text that may be shown now. Once
        ``done`` is set the generation has ended (``result.finish_reason`` says why); else
        ``history[-1]`` is the token to run next. Non-finite logits raise EngineError."""
        if self.done:
            raise EngineError("this generation has ended")
        if not np.isfinite(logits).all():
            raise EngineError(NON_FINITE)
        c = self._constraint
        token = self._sampler.sample(logits if c is None else c.mask(logits), self.history)
        if token in self._stop_ids:
            return self._end("stop")
        if c is not None:
            c.accept(token)
        self.history.append(token)
        self.result.tokens.append(token)
        self.result.generated_tokens += 1
        text, stopped = self._filter.push(self._decoder.push(token))
        if stopped or (c is not None and c.finished):
            self._end("stop")
        elif len(self.history) >= self.ctx_size or self.result.generated_tokens >= self.max_tokens:
            self._end("length")
        return text

    def finish(self, reason: str = "cancelled") -> str:
        """End the generation (with ``reason`` if it has not ended by itself: "cancelled" or
        "error"); returns the text still held back (none after an error). The answer's ids go to
        ``remember``, whoever ran the generation (``generate`` or a ``BatchScheduler``)."""
        if not self.done:
            self._end(reason)
        if self._remember is not None:
            self._remember(self.result.tokens)
        if self._constraint is not None:
            self.result.mask_seconds = self._constraint.mask_seconds
        if self.result.finish_reason == "error":
            return ""
        return self._filter.flush(self._decoder.flush())

    def _end(self, reason: str) -> str:
        self.done = True
        self.result.finish_reason = reason
        return ""
