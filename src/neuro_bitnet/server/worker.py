"""One model, many clients: a FIFO queue of jobs, up to ``model.parallel`` of them running at once.

Requests become :class:`Job`s, started strictly in arrival order on the worker's job threads
(one per KV slot of the model); each job streams its events (text pieces, then the final result
or an error) back to the asyncio loop that submitted it. A job's generations run in the model's
shared batch (:mod:`neuro_bitnet.server.batching`): a request joins the running batch at the next
forward pass and leaves it when it ends. Cancelling a job that is still queued drops it;
cancelling a running one stops its generation at the next step and frees its slot.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
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
    """A unit of work for a job thread of the worker, observed from an asyncio loop."""

    def __init__(self, fn: Callable[[Any, "Job"], Any], loop: asyncio.AbstractEventLoop) -> None:
        self.fn = fn
        self._loop = loop
        self._events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.cancelled = threading.Event()
        self.finished = False  # set on the loop when DONE/ERROR has been delivered

    # -- called on the job thread ----------------------------------------------------------
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
    """Runs jobs on one model, up to ``model.parallel`` at once, first come first served.

    ``fn(model, job)`` gets a :class:`~neuro_bitnet.server.batching.JobModel`: the model as the
    job may use it, generating in the shared batch. A worker of ``model=None`` runs one job at a
    time and hands them None (for tests of the queue alone)."""

    def __init__(self, model: Any, max_queue: int = 128) -> None:
        from neuro_bitnet.server.batching import BatchEngine

        self.model = model
        self.max_queue = max_queue
        self.parallel: int = model.parallel if model is not None else 1
        self.engine = BatchEngine(model) if model is not None else None
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()  # guards the counts, _running and _closed
        self._queued: set[Job] = set()  # submitted, not started, not cancelled
        self._running: set[Job] = set()
        self._closed = False
        self.submitted = 0
        self.completed = 0
        self.cancelled = 0  # jobs stopped because their client went away (or at shutdown)
        self._threads = [threading.Thread(target=self._run, name=f"neuro-job-{i}", daemon=True)
                         for i in range(self.parallel)]
        for thread in self._threads:
            thread.start()

    @property
    def waiting(self) -> int:
        """Jobs queued but not started (a cancelled one no longer counts)."""
        return len(self._queued)

    @property
    def running(self) -> int:
        """Jobs started and not finished."""
        return len(self._running)

    @property
    def busy(self) -> bool:
        return bool(self._running)

    def submit(self, fn: Callable[[Any, Job], Any]) -> Job:
        """Queue ``fn(model, job)``; must be called from a running event loop."""
        job = Job(fn, asyncio.get_running_loop())
        with self._lock:
            if self._closed:
                raise WorkerClosedError("the server is shutting down")
            if len(self._queued) >= self.max_queue:
                raise QueueFullError(f"{len(self._queued)} requests are already waiting for the model")
            self._queued.add(job)
            self.submitted += 1
            self._queue.put(job)
        return job

    def cancel(self, job: Job) -> None:
        """Drop a queued job (at once: it leaves the queue's count) or stop a running one's
        generation at the next step."""
        job.cancelled.set()
        with self._lock:
            if job not in self._queued:
                return
            self._queued.discard(job)
            self.cancelled += 1
        job._put(ERROR, JobCancelled())

    def close(self, timeout: float = 10.0) -> bool:
        """Refuse new jobs, cancel the queued and running ones, and join the threads."""
        with self._lock:
            self._closed = True
            running = list(self._running)
        for job in running:
            self.cancel(job)
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(deadline - time.monotonic(), 0))
        stopped = not any(t.is_alive() for t in self._threads)
        if self.engine is not None:
            stopped = self.engine.close(max(deadline - time.monotonic(), 0.1)) and stopped
        return stopped

    def _run(self) -> None:
        from neuro_bitnet.server.batching import JobModel

        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                if job not in self._queued:  # cancelled while it waited: already answered
                    continue
                self._queued.discard(job)
                if self._closed:
                    self.cancelled += 1
                else:
                    self._running.add(job)
            if job not in self._running:
                job._put(ERROR, JobCancelled())
                continue
            model = JobModel(self.engine, job.cancelled) if self.engine is not None else None
            cancelled = False
            try:
                result = job.fn(model, job)
            except JobCancelled as exc:
                cancelled = True
                job._put(ERROR, exc)
            except Exception as exc:  # delivered to the request, which turns it into a 4xx/5xx
                job._put(ERROR, exc)
            else:
                job._put(DONE, result)
            finally:
                with self._lock:
                    self._running.discard(job)
                    self.completed += 1
                    self.cancelled += cancelled
