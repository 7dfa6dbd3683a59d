"""The worker pool: a feeder claims due jobs in batches, workers run them.

One feeder task claims jobs for the idle workers (plus a small prefetch while jobs are
short, so that one claim serves many jobs) and ``concurrency`` worker tasks run them:
async handlers on the loop, sync handlers on daemon threads. Every state change is
stored before its hook fires.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import sys
import time
import traceback
from collections import deque
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from ..models import JobState
from .errors import JobTimeoutError
from .records import JobRecord, error_text, error_type, to_datetime

if TYPE_CHECKING:
    from .engine import Engine, JobSpec

__all__ = ["WorkerPool"]

logger = logging.getLogger("dispatch_ext.engine")

_MAX_PREFETCH = 64
_SHORT_JOB = 0.01  # seconds: jobs shorter than this on average are worth prefetching


class _Expired(Exception):
    """The per-job timeout ran out."""


if sys.version_info >= (3, 11):

    async def _within(awaitable: Awaitable[Any], seconds: float) -> Any:
        limit = asyncio.timeout(seconds)
        try:
            async with limit:
                return await awaitable
        except TimeoutError:
            if limit.expired():
                raise _Expired from None
            raise

else:  # pragma: no cover - Python 3.10

    async def _within(awaitable: Awaitable[Any], seconds: float) -> Any:
        try:
            return await asyncio.wait_for(awaitable, seconds)
        except asyncio.TimeoutError:
            raise _Expired from None


class WorkerPool:
    """Claims and runs the jobs of one engine."""

    def __init__(self, engine: Engine, concurrency: int) -> None:
        self.engine = engine
        self.concurrency = concurrency
        self.ready: deque[JobRecord] = deque()
        self.running: dict[int, JobRecord] = {}
        self.stopping = False
        self._idle: list[asyncio.Future[None]] = []
        self._feed = asyncio.Event()
        self._progress = asyncio.Event()
        self._feeder: asyncio.Task[None] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._average: float | None = None  # moving average of job durations
        self._prefetch = concurrency

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self._feeder = asyncio.create_task(self._feed_loop(), name="dispatch-feeder")
        self._workers = [
            asyncio.create_task(self._work_loop(), name=f"dispatch-worker-{i + 1}")
            for i in range(self.concurrency)
        ]

    def wake(self) -> None:
        """New work may be due (an enqueue, a retry): let the feeder look."""
        self._feed.set()

    @property
    def busy(self) -> bool:
        return bool(self.ready or self.running)

    async def wait_progress(self, timeout: float) -> None:
        """Wait until a job finishes (or ``timeout`` seconds pass)."""
        self._progress.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._progress.wait(), timeout)

    async def stop(self, timeout: float) -> None:
        """Stop claiming, put unstarted jobs back, let running jobs finish up to ``timeout``."""
        self.stopping = True
        self._feed.set()
        for waiter in self._idle:
            if not waiter.done():
                waiter.set_result(None)
        if self._feeder is not None:
            await asyncio.gather(self._feeder, return_exceptions=True)
        if self.ready:
            unstarted = list(self.ready)
            self.ready.clear()
            await self.engine.store.release(unstarted)
        if self._workers:
            _, late = await asyncio.wait(self._workers, timeout=timeout)
            if late:
                logger.warning(
                    "%d job(s) still running after the %.1f s shutdown timeout were "
                    "interrupted; they go back to the queue",
                    len(self.running),
                    timeout,
                )
                for task in late:
                    task.cancel()
                await asyncio.gather(*late, return_exceptions=True)
        self._workers = []
        self._progress.set()

    def _stopped(self) -> bool:
        return self.stopping  # a call, so that type checkers re-read it after an await

    # -- feeder -------------------------------------------------------------------------

    async def _feed_loop(self) -> None:
        engine, store, feed = self.engine, self.engine.store, self._feed
        poll = engine.settings.poll_interval
        while not self.stopping:
            wanted = len(self._idle) + self._prefetch - len(self.ready)
            if wanted <= 0:
                feed.clear()
                await feed.wait()
                continue
            feed.clear()
            try:
                jobs = await store.claim(engine._names, wanted, time.time())
            except Exception:
                logger.exception("claiming jobs from %r failed; trying again", store)
                await asyncio.sleep(poll)
                continue
            if jobs:
                if self._stopped():
                    await store.release(jobs)
                    return
                self.ready.extend(jobs)
                idle, ready = self._idle, len(self.ready)
                while idle and ready:
                    waiter = idle.pop()
                    if not waiter.done():
                        waiter.set_result(None)
                        ready -= 1
                continue
            try:
                due = await store.next_run_at(engine._names)
            except Exception:
                logger.exception("reading %r failed; trying again", store)
                due = None
            delay = poll if due is None else min(poll, due - time.time())
            if delay > 0 and not feed.is_set():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(feed.wait(), delay)

    # -- workers ------------------------------------------------------------------------

    async def _work_loop(self) -> None:
        ready, loop = self.ready, asyncio.get_running_loop()
        while True:
            if ready:
                job = ready.popleft()
                if len(ready) <= self._prefetch >> 1:
                    self._feed.set()
                await self._execute(job)
                continue
            if self.stopping:
                return
            waiter = loop.create_future()
            self._idle.append(waiter)
            self._feed.set()
            try:
                await waiter
            finally:
                if waiter in self._idle:
                    self._idle.remove(waiter)

    async def _execute(self, job: JobRecord) -> None:
        engine = self.engine
        spec = engine._jobs.get(job.name)
        if spec is None:  # unregistered since the claim: leave it for another engine
            await engine.store.release([job])
            return
        gate = engine._gates.get(job.id)
        if gate is not None:  # its enqueue (or retry) hook has not finished yet
            await asyncio.shield(gate)
        listening = engine._listening
        self.running[job.seq] = job
        try:
            if listening("on_job_started"):
                await engine._emit("on_job_started", job=job.snapshot())
            started = time.perf_counter()
            try:
                await self._call(spec, job)
            except asyncio.CancelledError:
                await engine.store.release([job])
                raise
            except Exception as exc:
                await self._failed(spec, job, exc, time.perf_counter() - started)
            else:
                await self._completed(job, time.perf_counter() - started)
        finally:
            del self.running[job.seq]
            self._progress.set()

    async def _call(self, spec: JobSpec, job: JobRecord) -> None:
        payload = json.loads(job.payload)
        timeout = job.timeout
        if spec.is_async:
            if timeout is None:
                await spec.fn(payload)
                return
            try:
                await _within(spec.fn(payload), timeout)
            except _Expired:
                raise self._timeout_error(job) from None
            return
        future = self.engine._threads.submit(asyncio.get_running_loop(), spec.fn, payload)
        try:
            result = await (future if timeout is None else _within(future, timeout))
        except _Expired:
            self.engine._threads.abandon(future)
            raise self._timeout_error(job) from None
        except asyncio.CancelledError:
            self.engine._threads.abandon(future)
            raise
        if asyncio.iscoroutine(result):  # a sync function that returned a coroutine
            await (result if timeout is None else _within(result, timeout))

    @staticmethod
    def _timeout_error(job: JobRecord) -> JobTimeoutError:
        return JobTimeoutError(
            f"job {job.name!r} ({job.id}) did not finish within its {job.timeout:g} s timeout"
        )

    def _learn(self, seconds: float) -> None:
        average = self._average
        average = seconds if average is None else average * 0.9 + seconds * 0.1
        self._average = average
        if average >= _SHORT_JOB:
            self._prefetch = 0
        else:
            self._prefetch = min(
                _MAX_PREFETCH,
                max(self.concurrency, int(0.02 * self.concurrency / max(average, 1e-4))),
            )

    async def _completed(self, job: JobRecord, elapsed: float) -> None:
        self._learn(elapsed)
        engine = self.engine
        job.state = JobState.COMPLETED
        job.completed_at = time.time()
        await engine.store.complete(job)
        if engine._listening("on_job_completed"):
            await engine._emit(
                "on_job_completed", job=job.snapshot(), elapsed=dt.timedelta(seconds=elapsed)
            )

    async def _failed(self, spec: JobSpec, job: JobRecord, exc: Exception, elapsed: float) -> None:
        self._learn(elapsed)
        engine, store = self.engine, self.engine.store
        job.last_error = error_text(exc)
        now = time.time()
        if job.retry_count < job.max_retries:
            attempt = job.retry_count + 1
            try:
                delay = max(0.0, float(spec.backoff(attempt)))
            except Exception:
                logger.exception("backoff of job %r raised; retrying in 1 s", job.name)
                delay = 1.0
            job.state = JobState.RETRYING
            job.retry_count = attempt
            job.run_at = now + delay
            job.started_at = None
            listening = engine._listening("on_job_retrying")
            gate = engine._hold(job.id) if listening else None
            try:
                await store.retry(job)
                self._feed.set()
                if listening:
                    await engine._emit(
                        "on_job_retrying",
                        job=job.snapshot(),
                        error=exc,
                        attempt=attempt,
                        next_run_at=to_datetime(job.run_at),
                    )
            finally:
                if gate is not None:
                    engine._release(job.id, gate)
            return
        job.state = JobState.DEAD
        job.completed_at = now
        trace = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        await store.bury(job, job.last_error, error_type(exc), trace)
        if engine._listening("on_job_failed"):
            await engine._emit("on_job_failed", job=job.snapshot(JobState.FAILED), error=exc)
        if engine._listening("on_job_dlq"):
            await engine._emit("on_job_dlq", job=job.snapshot(), error=exc)
