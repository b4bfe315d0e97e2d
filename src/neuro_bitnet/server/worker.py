"""One model, many clients: a FIFO queue of jobs run by a single model thread.

The engine runs one generation at a time. Requests become :class:`Job`s that the worker
thread runs strictly in arrival order; each job streams its events (text pieces, then the
final result or an error) back to the asyncio loop that submitted it. Cancelling a job that
is still queued drops it; cancelling the running one stops it before its next token.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from typing import Any, AsyncIterator, Callable

log = logging.getLogger("neuro_bitnet.server")

PIECE, DONE, ERROR = "piece", "done", "error"


class QueueFullError(Exception):
    """Too many requests are already waiting for the model."""


class WorkerClosedError(Exception):
    """The worker is shutting down and takes no new jobs."""


class JobCancelled(Exception):
    """Raised inside a job function when its client has gone away."""


class Job:
    """A unit of work for the model thread, observed from an asyncio loop."""

    def __init__(self, fn: Callable[[Any, "Job"], Any], loop: asyncio.AbstractEventLoop) -> None:
        self.fn = fn
        self._loop = loop
        self._events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.cancelled = threading.Event()
        self.finished = False  # set on the loop when DONE/ERROR has been delivered

    # -- called on the model thread --------------------------------------------------------
    def emit(self, piece: str) -> None:
        """Send a piece of text to the client; raises JobCancelled once the client is gone."""
        if self.cancelled.is_set():
            raise JobCancelled()
        self._put(PIECE, piece)

    def check(self) -> None:
        """Raise JobCancelled if the client is gone (for long jobs between steps)."""
        if self.cancelled.is_set():
            raise JobCancelled()

    def _put(self, kind: str, value: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(self._events.put_nowait, (kind, value))
        except RuntimeError:  # the loop is closed: nobody is listening any more
            pass

    # -- called on the loop ---------------------------------------------------------------
    async def next_event(self) -> tuple[str, Any]:
        """The next (kind, value): ("piece", str), then ("done", result) or ("error", exc)."""
        event = await self._events.get()
        if event[0] in (DONE, ERROR):
            self.finished = True
        return event

    async def events(self) -> AsyncIterator[tuple[str, Any]]:
        while True:
            event = await self.next_event()
            yield event
            if event[0] in (DONE, ERROR):
                return


class ModelWorker:
    """Runs jobs on one model, one at a time, first come first served."""

    def __init__(self, model: Any, max_queue: int = 128) -> None:
        self.model = model
        self.max_queue = max_queue
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._waiting = 0
        self._current: Job | None = None
        self._closed = False
        self.submitted = 0
        self.completed = 0
        self.cancelled = 0  # jobs stopped because their client went away (or at shutdown)
        self._thread = threading.Thread(target=self._run, name="neuro-model", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        """Jobs queued but not started."""
        return self._waiting

    @property
    def busy(self) -> bool:
        return self._current is not None

    def submit(self, fn: Callable[[Any, Job], Any]) -> Job:
        """Queue ``fn(model, job)``; must be called from a running event loop."""
        job = Job(fn, asyncio.get_running_loop())
        with self._lock:
            if self._closed:
                raise WorkerClosedError("the server is shutting down")
            if self._waiting >= self.max_queue:
                raise QueueFullError(f"{self._waiting} requests are already waiting for the model")
            self._waiting += 1
            self.submitted += 1
            self._queue.put(job)
        return job

    def cancel(self, job: Job) -> None:
        """Drop a queued job or stop the running one before its next token."""
        job.cancelled.set()
        if self._current is job:
            cancel = getattr(self.model, "cancel", None)
            if cancel is not None:
                cancel()

    def close(self, timeout: float = 10.0) -> bool:
        """Refuse new jobs, cancel the queued and running ones, and join the thread."""
        with self._lock:
            self._closed = True
        current = self._current
        if current is not None:
            self.cancel(current)
        self._queue.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                self._waiting -= 1
                closed = self._closed
            if closed or job.cancelled.is_set():
                self.cancelled += 1
                job._put(ERROR, JobCancelled())
                continue
            self._current = job
            try:
                result = job.fn(self.model, job)
            except JobCancelled as exc:
                self.cancelled += 1
                job._put(ERROR, exc)
            except Exception as exc:  # delivered to the request, which turns it into a 4xx/5xx
                job._put(ERROR, exc)
            else:
                job._put(DONE, result)
            finally:
                self._current = None
                self.completed += 1
