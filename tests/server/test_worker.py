"""The model worker's queue: strict arrival order, queued jobs dropped on cancel, bounded size."""

from __future__ import annotations

import asyncio
import threading

import pytest

from neuro_bitnet.server.worker import DONE, ERROR, JobCancelled, ModelWorker, QueueFullError


def test_jobs_run_one_at_a_time_in_arrival_order() -> None:
    order: list[int] = []
    gate = threading.Event()
    running = threading.Lock()

    def job_fn(i: int):
        def fn(model, job):
            assert running.acquire(blocking=False), "two jobs ran at once"
            try:
                if i == 0:
                    gate.wait(10)  # hold the worker until every job is queued
                order.append(i)
                job.emit(f"piece-{i}")
                return i
            finally:
                running.release()
        return fn

    async def main():
        worker = ModelWorker(model=None, max_queue=100)
        jobs = [worker.submit(job_fn(i)) for i in range(20)]
        gate.set()
        results = []
        for job in jobs:
            events = [e async for e in job.events()]
            assert events[0] == ("piece", f"piece-{events[-1][1]}")
            results.append(events[-1])
        assert worker.close()
        return results

    results = asyncio.run(main())
    assert order == list(range(20))
    assert results == [(DONE, i) for i in range(20)]


def test_cancelled_queued_job_never_runs_and_queue_is_bounded() -> None:
    gate = threading.Event()
    ran: list[str] = []

    def blocker(model, job):
        gate.wait(10)
        return "blocker"

    def victim(model, job):
        ran.append("victim")

    async def main():
        worker = ModelWorker(model=None, max_queue=2)
        first = worker.submit(blocker)
        await asyncio.sleep(0.05)  # the blocker is running, the queue is empty
        queued = worker.submit(victim)
        last = worker.submit(lambda model, job: "last")
        with pytest.raises(QueueFullError):
            worker.submit(victim)
        worker.cancel(queued)
        gate.set()
        kind, value = [e async for e in queued.events()][-1]
        assert (await first.next_event()) == (DONE, "blocker")
        # let the last job finish before closing: close() cancels what is still queued
        assert [e async for e in last.events()][-1] == (DONE, "last")
        assert worker.close()
        return kind, value, worker.cancelled

    kind, value, cancelled = asyncio.run(main())
    assert kind == ERROR and isinstance(value, JobCancelled)
    assert ran == [] and cancelled == 1
