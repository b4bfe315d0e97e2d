"""Continuous batching: several generations share every forward pass of one model.

A :class:`BatchScheduler` holds requests; each :meth:`~BatchScheduler.step` runs one forward pass
over the next token of every decoding request plus a chunk of the prompts still being read, and
returns the text pieces it produced. A request joins at the next step after its submission (when a
KV slot is free; FIFO otherwise) and leaves when it finishes, hits a stop, or is cancelled.

The core computes every token independently of the others in its batch (int8 activations are
quantized per token, attention reads only the token's own slot), so a request gets exactly the
tokens it would get alone.

Threads: ``submit`` and ``BatchRequest.cancel`` may be called from any thread; ``step``/``run``
from one thread at a time (a daemon's worker). While requests are active the scheduler holds the
model: ``generate``/``logits`` on it meanwhile raise EngineError.
"""

from __future__ import annotations

import collections
import itertools
import threading
import time
from typing import Iterator, NamedTuple, Sequence

import numpy as np

from neuro_bitnet.engine.constrained import Grammar
from neuro_bitnet.engine.decoding import Decoding
from neuro_bitnet.engine.model import BitNetModel, common_prefix, reusable_prefix
from neuro_bitnet.engine.options import DEFAULT_MAX_TOKENS, DEFAULT_SAMPLING
from neuro_bitnet.engine.sampling import SamplingParams
from neuro_bitnet.errors import EngineError

STEP_TOKENS = 64  # tokens per forward pass (one core batch): decode tokens first, then prompt chunks

_ids = itertools.count(1)


class BatchRequest:
    """One generation of a :class:`BatchScheduler` (made by ``submit``). Read ``tokens``,
    ``result`` (an :class:`AnswerResult`; ``finish_reason``: "stop", "length", "cancelled" or "error"), ``error`` and
    ``done``; call ``cancel()`` from any thread."""

    def __init__(self, decoding: Decoding, cancel: threading.Event | None = None) -> None:
        self.id = next(_ids)
        self.prompt_ids = decoding.prompt_ids
        self.max_tokens = decoding.max_tokens
        self.result = decoding.result
        self.tokens: list[int] = decoding.result.tokens  # generated token ids
        self.error: str | None = None  # the message when finish_reason is "error"
        self.done = False
        self._decoding = decoding
        self._history = decoding.history  # prompt + generated: the sequence in the slot
        self._fed = 0  # tokens of _history whose keys/values are in the slot
        self._slot: int | None = None
        self._cancel = cancel if cancel is not None else threading.Event()
        self._start = 0.0
        self._decode_start = 0.0

    def cancel(self) -> None:
        """Stop this request at the next step (thread-safe)."""
        self._cancel.set()

    @property
    def finish_reason(self) -> str:
        return self.result.finish_reason

    def __repr__(self) -> str:
        return (f"BatchRequest(id={self.id}, prompt={len(self.prompt_ids)}, generated={len(self.tokens)}, "
                f"done={self.done})")


class BatchPiece(NamedTuple):
    """Text a step produced for one request; ``finished``: the request's last piece."""

    request: BatchRequest
    text: str
    finished: bool


class BatchScheduler:
    """Runs up to ``model.parallel`` requests together (``load_model(..., parallel=N)``), one
    KV slot each (``ctx_size`` positions per slot). A slot keeps its tokens after its request
    ends: a new request takes the free slot sharing its longest prefix and reads only the rest.
    ``step_tokens`` bounds the tokens of one forward pass; long prompts are read in chunks so the
    running requests keep decoding (a step always carries every decoding request's token)."""

    def __init__(self, model: BitNetModel, *, step_tokens: int = STEP_TOKENS) -> None:
        if step_tokens < 1:
            raise EngineError("step_tokens must be >= 1")
        self.model = model
        self.step_tokens = step_tokens
        self._pending: collections.deque[BatchRequest] = collections.deque()
        self._lock = threading.Lock()  # guards _pending (submit from other threads)
        self._active: list[BatchRequest] = []  # in admission order
        self._free = list(range(model.parallel))
        self._slot_tokens: list[list[int]] = [[] for _ in range(model.parallel)]  # KV contents per slot
        self._holding = False  # this scheduler holds the model's lock (while requests are active)
        self._release = None

    # -- requests -----------------------------------------------------------------------------
    def submit(
        self,
        prompt_or_ids: str | Sequence[int],
        *,
        max_tokens: int = DEFAULT_MAX_TOKENS,
        temperature: float = DEFAULT_SAMPLING.temperature,
        top_k: int = DEFAULT_SAMPLING.top_k,
        top_p: float = DEFAULT_SAMPLING.top_p,
        min_p: float = DEFAULT_SAMPLING.min_p,
        repeat_penalty: float = DEFAULT_SAMPLING.repeat_penalty,
        seed: int | None = None,
        stop: str | Sequence[str] | None = None,
        json_schema: dict | bool | str | None = None,
        grammar: Grammar | None = None,
        cancel: threading.Event | None = None,
    ) -> BatchRequest:
        """Queue a generation (text is tokenized with BOS); it joins at a following step. The same
        options as ``BitNetModel.generate`` (grammar-constrained output included), and the same
        errors before anything runs (a prompt that cannot fit a slot raises EngineError).
        ``cancel``: an event of the caller's that cancels the request once set (as ``cancel()``)."""
        params = SamplingParams(temperature, top_k, top_p, min_p, repeat_penalty, seed=seed)
        req = BatchRequest(self.model.decoding(prompt_or_ids, max_tokens, params, stop, json_schema, grammar), cancel)
        with self._lock:
            self._pending.append(req)
        return req

    @property
    def busy(self) -> bool:
        """True while requests are running or waiting."""
        with self._lock:
            return bool(self._active or self._pending)

    @property
    def active(self) -> list[BatchRequest]:
        """The requests holding a slot, in admission order."""
        return list(self._active)

    # -- stepping -----------------------------------------------------------------------------
    def run(self) -> Iterator[BatchPiece]:
        """Steps until no request is left, yielding every piece."""
        while self.busy:
            yield from self.step()

    def step(self) -> list[BatchPiece]:
        """Admit waiting requests into free slots, run one forward pass, sample; returns the
        pieces produced (a finished request's last piece has ``finished`` set). Cancelled
        requests leave here. Returns [] when there is nothing to do."""
        out: list[BatchPiece] = []
        with self._lock:
            gone = [r for r in self._pending if r._cancel.is_set()]
            for req in gone:
                self._pending.remove(req)
        for req in gone + [r for r in self._active if r._cancel.is_set()]:
            out.append(self._finish(req, "cancelled"))
        self._admit(out)
        if self._active:
            self._hold_model()
            self._forward(out)
        if not self._active:
            self._let_go_of_model()
        return out

    def abort(self, message: str) -> list[BatchPiece]:
        """End every request, running or waiting, with finish_reason "error" and ``message``
        (after an exception from ``step``, or at shutdown), and hand the model back."""
        with self._lock:
            waiting = list(self._pending)
            self._pending.clear()
        out = []
        for req in self._active[:] + waiting:
            req.error = message
            out.append(self._finish(req, "error"))
        self._let_go_of_model()
        return out

    def _admit(self, out: list[BatchPiece]) -> None:
        while self._free:
            with self._lock:
                if not self._pending:
                    return
                first = self._pending[0]
            if not first._cancel.is_set() and not first._decoding.done:
                self._hold_model()  # before taking it off the queue: EngineError leaves it there
            with self._lock:
                req = self._pending.popleft()
            if req._cancel.is_set():
                out.append(self._finish(req, "cancelled"))
                continue
            if req._decoding.done:  # max_tokens 0
                out.append(self._finish(req, "length"))
                continue
            slot = max(self._free, key=lambda s: (common_prefix(self._slot_tokens[s], req.prompt_ids), -s))
            self._free.remove(slot)
            reuse = reusable_prefix(self._slot_tokens[slot], req.prompt_ids)
            del self._slot_tokens[slot][reuse:]
            req._slot, req._fed = slot, reuse
            req.result.cached_tokens = reuse
            req._start = time.perf_counter()
            self._active.append(req)

    def _forward(self, out: list[BatchPiece]) -> None:
        """One core call over the pending input of the active requests, then sampling."""
        decoding = [r for r in self._active if len(r._history) - r._fed == 1]
        reading = [r for r in self._active if len(r._history) - r._fed > 1]
        budget = max(self.step_tokens - len(decoding), 1)
        tokens: list[int] = []
        slots: list[int] = []
        positions: list[int] = []
        rows: list[int] = []
        sampled: list[BatchRequest] = []
        for req in decoding + reading:
            want = len(req._history) - req._fed
            n = want if want == 1 else min(want, budget)
            if n == 0:
                continue
            if want > 1:
                budget -= n
            tokens += req._history[req._fed : req._fed + n]
            slots += [req._slot] * n
            positions += range(req._fed, req._fed + n)
            if n == want:  # the chunk reaches the end of the sequence: its logits are needed
                rows.append(len(tokens) - 1)
                sampled.append(req)
        logits = np.empty((len(rows), self.model.n_vocab), dtype=np.float32)
        try:
            self.model._core.forward_batch(
                np.asarray(tokens, dtype=np.int32), np.asarray(slots, dtype=np.int32),
                np.asarray(positions, dtype=np.int32), np.asarray(rows, dtype=np.int32), logits)
        except ValueError as exc:  # a scheduler bug, not the caller's input
            raise EngineError(f"batch step refused by the core: {exc}") from None
        self._account(tokens, slots)
        for i, req in enumerate(sampled):  # rows grow with the batch: sampled is in row order
            piece = self._sample(req, logits[i])
            if piece is not None:
                out.append(piece)

    def _account(self, tokens: list[int], slots: list[int]) -> None:
        """Record what the step wrote into each slot and how far each request has been fed."""
        for req in self._active:
            written = [t for t, s in zip(tokens, slots) if s == req._slot]
            if written:
                self._slot_tokens[req._slot] += written
                req._fed += len(written)

    def _sample(self, req: BatchRequest, logits: np.ndarray) -> BatchPiece | None:
        """The next token of req from its logits (the rules of ``engine.decoding``, as ``generate``)."""
        if not req._decode_start:
            req.result.prefill_seconds = time.perf_counter() - req._start
            req._decode_start = time.perf_counter()
        if req._cancel.is_set():
            return self._finish(req, "cancelled")
        try:
            text = req._decoding.push(logits)
        except EngineError as exc:  # non-finite logits, a grammar the vocabulary cannot follow
            req.error = str(exc)
            return self._finish(req, "error")
        if req._decoding.done:
            return self._finish(req, req.result.finish_reason, text)
        if not text:
            return None
        req.result.text += text
        return BatchPiece(req, text, False)

    def _finish(self, req: BatchRequest, reason: str, text: str = "") -> BatchPiece:
        """End req: its slot (and the tokens in it) becomes free; the held-back text follows."""
        if req._decode_start:
            req.result.decode_seconds = time.perf_counter() - req._decode_start
        text += req._decoding.finish(reason)
        req.result.text += text
        req.done = True
        if req in self._active:
            self._active.remove(req)
            self._free.append(req._slot)
            self._free.sort()
        return BatchPiece(req, text, True)

    # -- the model's lock ---------------------------------------------------------------------
    def _hold_model(self) -> None:
        """Take the model for a busy period; slot 0 is also ``generate``'s, whose record of
        what the slot holds (``model._cached``) is taken over and handed back."""
        if self._holding:
            return
        self._release = self.model._exclusive()  # EngineError when it is generating elsewhere
        self._holding = True
        self._slot_tokens[0] = list(self.model._cached)

    def _let_go_of_model(self) -> None:
        if not self._holding:
            return
        self.model._cached = list(self._slot_tokens[0])
        self._holding = False
        self._release.__exit__(None, None, None)

