"""The daemon's model: one :class:`BatchScheduler` stepped by one thread, fed by many jobs.

Jobs (see :mod:`neuro_bitnet.server.worker`) run on their own threads; when one generates, its
request joins the running batch at the next forward pass (continuous batching) and its pieces
come back through a queue of its own. A job's generations are cancelled with the job: its cancel
event is the request's, so a client that goes away frees its slot at the next step.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Iterator, Sequence

from neuro_bitnet.engine.batch import BatchPiece, BatchRequest, BatchScheduler
from neuro_bitnet.engine.constrained import prepare_vocabulary
from neuro_bitnet.engine.stats import Generation
from neuro_bitnet.errors import EngineError

log = logging.getLogger("neuro_bitnet.server")


class BatchEngine:
    """Generations of several threads in the batches of one model (``model.parallel`` slots)."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.scheduler = BatchScheduler(model)
        # Guards _queues and _closed; held from a request's submission to the registration of its
        # queue, so that no piece of it is delivered before (a submission checks and queues only).
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._queues: dict[int, queue.SimpleQueue[tuple[str, bool]]] = {}
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="neuro-batch", daemon=True)
        self._thread.start()

    @property
    def active(self) -> int:
        """Requests holding a slot now."""
        return len(self.scheduler.active)

    def generate(self, prompt_or_ids: str | Sequence[int], *, cancel: threading.Event | None = None,
                 **options: Any) -> Generation:
        """Stream a generation as ``BitNetModel.generate`` does (same options, same errors before
        it starts); setting ``cancel`` ends it at the next step. A failure of the model while it
        runs raises EngineError from the stream."""
        started = time.perf_counter()
        if options.get("grammar") is not None or options.get("json_schema") is not None:
            prepare_vocabulary(self.model.tokenizer, self.model.n_vocab)  # ~1 s once: not under the lock
        with self._lock:
            if self._closed:
                raise EngineError("the model is shutting down")
            req = self.scheduler.submit(prompt_or_ids, cancel=cancel, **options)
            pieces: queue.SimpleQueue[tuple[str, bool]] = queue.SimpleQueue()
            self._queues[req.id] = pieces
            self._wake.notify()
        return Generation(self._stream(req, pieces), req.result, started)

    def close(self, timeout: float = 10.0) -> bool:
        """End every generation (finish_reason "error") and stop the thread."""
        with self._lock:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @staticmethod
    def _stream(req: BatchRequest, pieces: queue.SimpleQueue[tuple[str, bool]]) -> Iterator[str]:
        finished = False
        try:
            while not finished:
                text, finished = pieces.get()
                if text:
                    yield text
        finally:
            if not finished:  # closed early: leave the batch at the next step
                req.cancel()
        if req.finish_reason == "error":
            raise EngineError(req.error or "the generation failed")

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._closed and not self.scheduler.busy:
                    self._wake.wait()
                closed = self._closed
            if closed:
                self._deliver(self.scheduler.abort("the server is shutting down"))
                return
            try:
                pieces = self.scheduler.step()
            except Exception as exc:  # the model failed: every running generation ends with it
                log.error("the model failed while generating", exc_info=exc)
                pieces = self.scheduler.abort(f"the model failed: {exc}")
            self._deliver(pieces)

    def _deliver(self, pieces: list[BatchPiece]) -> None:
        with self._lock:
            for piece in pieces:
                target = self._queues.get(piece.request.id)
                if target is None:
                    continue
                target.put((piece.text, piece.finished))
                if piece.finished:
                    del self._queues[piece.request.id]


class JobModel:
    """What a job sees of the model: its names, tokenizer and chat format, and generation through
    the shared batch, cancelled with the job (``cancelled``: the job's event)."""

    def __init__(self, engine: BatchEngine, cancelled: threading.Event) -> None:
        model = engine.model
        self._engine = engine
        self._cancelled = cancelled
        self.name: str = model.name
        self.ctx_size: int = model.ctx_size
        self.n_vocab: int = model.n_vocab
        self.tokenizer = model.tokenizer
        self.tokenize = model.tokenize
        self.detokenize = model.detokenize
        self.chat_prompt_ids = model.chat_prompt_ids
        self.render_chat = model.render_chat

    def generate(self, prompt_or_ids: str | Sequence[int], **options: Any) -> Generation:
        """``BitNetModel.generate`` in the shared batch."""
        return self._engine.generate(prompt_or_ids, cancel=self._cancelled, **options)

    def chat(self, messages: list[dict[str, str]], **options: Any) -> Generation:
        """``BitNetModel.chat`` in the shared batch."""
        return self.generate(self.chat_prompt_ids(messages), **options)
