"""The worker pool: a feeder claims due jobs in batches, workers run them.

One feeder task claims jobs for the idle workers (plus a prefetch while jobs are short,
so that one claim serves many jobs) and ``concurrency`` worker tasks run them: async
handlers on the loop, sync handlers on daemon threads. Every state change is stored
before its hook fires. Timeouts are kept by one watchdog timer for the whole pool (a
``call_at`` per pool rather than a timeout context per job), which cancels a job's
handler when its deadline passes.

Every write that ends an attempt is fenced by the store: when this worker lost its
lease while a job ran (another worker took the job over), the attempt's result is
discarded with one warning, and no hook fires for it.
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
from functools import partial
from typing import TYPE_CHECKING, Any

from ..models import JobState
from .batch import Batch, run_batch
from .errors import JobTimeoutError
from .records import JobRecord, error_text, error_type, to_datetime

if TYPE_CHECKING:
    from .engine import Engine
    from .jobs import JobSpec

__all__ = ["WorkerPool"]

logger = logging.getLogger("dispatch_ext.engine")

_MAX_PREFETCH = 64
_SHORT_JOB = 0.01  # seconds: jobs shorter than this on average are worth prefetching
_YIELD_EVERY = 32  # jobs a worker may run without giving the loop a turn
_BATCH_SIZES = ((0.0002, 8), (0.001, 4))  # (average seconds below which, jobs per hop)
_INFINITY = float("inf")


class _Slot:
    """One worker: its task, and the job it runs with that job's deadline."""

    __slots__ = ("batch", "deadline", "expired", "job", "jobs", "task")

    def __init__(self) -> None:
        self.task: asyncio.Task[None] | None = None
        self.job: JobRecord | None = None
        self.deadline: float | None = None  # loop time
        self.expired = False
        self.batch: Batch | None = None  # set while a batch of sync jobs runs
        self.jobs: list[JobRecord] = []


class WorkerPool:
    """Claims and runs the jobs of one engine."""

    def __init__(self, engine: Engine, concurrency: int) -> None:
        owner = engine.worker_id
        if owner is None:
            raise RuntimeError("a worker pool needs a started engine (a registered worker)")
        self.engine = engine
        self.owner = owner  # the worker id every claim and fenced write is made under
        self.concurrency = concurrency
        self.ready: deque[JobRecord] = deque()
        self.running = 0
        self.stopping = False
        self._loop = asyncio.get_running_loop()
        self._slots = [_Slot() for _ in range(concurrency)]
        self._idle: list[asyncio.Future[None]] = []
        self._feed = asyncio.Event()
        self._progress = asyncio.Event()
        self._feeder: asyncio.Task[None] | None = None
        self._average: float | None = None  # moving average of job durations
        self._prefetch = concurrency
        self._watch_at = _INFINITY
        self._watch: asyncio.TimerHandle | None = None
        self._durations: dict[str, float] = {}  # moving average per job name
        self._unbatchable: set[str] = set()
        self._completions: deque[tuple[Awaitable[bool], JobRecord, float]] = deque()
        self._announcer: asyncio.Task[None] | None = None
        self._announce_wake: asyncio.Future[None] | None = None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        self._feeder = asyncio.create_task(self._feed_loop(), name="dispatch-feeder")
        for i, slot in enumerate(self._slots):
            slot.task = asyncio.create_task(self._work_loop(slot), name=f"dispatch-worker-{i + 1}")

    def wake(self) -> None:
        """New work may be due (an enqueue, a retry): let the feeder look."""
        self._feed.set()

    @property
    def busy(self) -> bool:
        return bool(self.ready or self.running or self._completions)

    async def wait_progress(self, timeout: float) -> None:
        """Wait until a job finishes (or ``timeout`` seconds pass)."""
        self._progress.clear()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._progress.wait(), timeout)

    def hurry(self) -> None:
        """Cancel the running jobs (a second signal, or the shutdown timeout)."""
        for slot in self._slots:
            if slot.task is not None and not slot.task.done():
                slot.task.cancel()

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
            await self.engine.store.release(unstarted, self.owner)
        tasks = [slot.task for slot in self._slots if slot.task is not None]
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=timeout)
            if late:
                logger.warning(
                    "%d job(s) still running after the %.1f s shutdown timeout were "
                    "interrupted; they go back to the queue and run again later. A sync "
                    "handler's thread cannot be stopped: it may still finish its work "
                    "(delivery is at-least-once; handlers should be idempotent)",
                    self.running,
                    timeout,
                )
                self.hurry()
                await asyncio.gather(*late, return_exceptions=True)
        if self._watch is not None:
            self._watch.cancel()
        if self._announcer is not None:  # let it emit what is left, then end
            if self._announce_wake is not None and not self._announce_wake.done():
                self._announce_wake.set_result(None)
            await asyncio.gather(self._announcer, return_exceptions=True)
        self._progress.set()

    def _stopped(self) -> bool:
        return self.stopping  # a call, so that type checkers re-read it after an await

    async def drop_claimed(self) -> None:
        """This worker was presumed gone: let go of the jobs claimed but not started.

        Another worker put back (and may run) what this one held; the jobs claimed since
        go back to the queue (the store releases only those still held), and none of
        them is announced as started here.
        """
        if self.ready:
            unstarted = list(self.ready)
            self.ready.clear()
            await self.engine.store.release(unstarted, self.owner)
            self._feed.set()

    # -- feeder -------------------------------------------------------------------------

    async def _feed_loop(self) -> None:
        engine, store, feed = self.engine, self.engine.store, self._feed
        poll = engine.settings.poll_interval
        owner = self.owner
        while not self.stopping:
            wanted = len(self._idle) + self._prefetch - len(self.ready)
            if wanted <= 0:
                feed.clear()
                await feed.wait()
                continue
            feed.clear()
            try:
                jobs = await store.claim(engine._names, wanted, time.time(), owner)
            except Exception:
                logger.exception("claiming jobs from %r failed; trying again", store)
                await asyncio.sleep(poll)
                continue
            if jobs:
                if self._stopped():
                    await store.release(jobs, owner)
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

    async def _work_loop(self, slot: _Slot) -> None:
        ready, loop, run = self.ready, self._loop, self._run
        streak = 0
        while True:
            if ready:
                job = ready.popleft()
                if len(ready) <= self._prefetch >> 1:
                    self._feed.set()
                size = self._batch_size(job) if ready else 1
                if size > 1:
                    jobs = [job]
                    while ready and len(jobs) < size and ready[0].name == job.name:
                        jobs.append(ready.popleft())
                    await self._run_batch(slot, jobs)
                    streak += len(jobs)
                else:
                    await run(slot, job)
                    streak += 1
                if streak >= _YIELD_EVERY:  # jobs that never block would starve the loop
                    streak = 0
                    await asyncio.sleep(0)
                continue
            if self.stopping:
                return
            streak = 0
            waiter = loop.create_future()
            self._idle.append(waiter)
            self._feed.set()
            try:
                await waiter
            finally:
                if waiter in self._idle:
                    self._idle.remove(waiter)

    async def _run(self, slot: _Slot, job: JobRecord, announced: bool = False) -> None:
        engine = self.engine
        spec = engine._jobs.get(job.name)
        if spec is None:  # unregistered since the claim: leave it for another engine
            await engine.store.release([job], self.owner)
            return
        if engine._gates:
            gate = engine._gates.get(job.id)
            if gate is not None:  # its enqueue (or retry) hook has not finished yet
                await asyncio.shield(gate)
        listening = engine._listening
        self.running += 1
        slot.job = job
        try:
            if not announced and listening("on_job_started"):
                await engine._emit("on_job_started", job=job.snapshot())
            started = time.perf_counter()
            try:
                await self._call(slot, spec, job)
            except asyncio.CancelledError:
                if slot.expired:
                    _uncancel(slot.task)
                    error: Exception = self._timeout_error(job)
                elif _being_cancelled(slot.task):  # shutdown: the job goes back to the queue
                    await engine.store.release([job], self.owner)
                    raise
                else:  # the handler itself raised CancelledError
                    error = RuntimeError(f"job {job.name!r} ({job.id}) was cancelled")
                await self._failed(spec, job, error, time.perf_counter() - started)
            except Exception as exc:
                await self._failed(spec, job, exc, time.perf_counter() - started)
            else:
                self._completed(job, time.perf_counter() - started)
        finally:
            slot.job = None
            slot.expired = False
            self.running -= 1
            self._progress.set()

    async def _call(self, slot: _Slot, spec: JobSpec, job: JobRecord) -> None:
        payload = json.loads(job.payload)
        timeout = job.timeout
        if timeout is not None:
            deadline = self._loop.time() + timeout
            slot.deadline = deadline
            if deadline < self._watch_at:
                self._arm(deadline)
        try:
            if spec.is_async:
                await spec.fn(payload)
                return
            threads = self.engine._threads
            future = threads.submit(self._loop, spec.fn, payload)
            try:
                result = await future
            except asyncio.CancelledError:
                threads.abandon(future)
                raise
            if asyncio.iscoroutine(result):  # a sync function that returned a coroutine
                await result
        finally:
            slot.deadline = None

    def _completed(self, job: JobRecord, elapsed: float) -> None:
        self._learn(elapsed, job.name)
        job.state = JobState.COMPLETED
        job.completed_at = time.time()
        stored = self.engine.store.complete(job, self.owner)
        if self.engine._listening("on_job_completed"):
            self._announce(stored, job, elapsed)
        elif isinstance(stored, asyncio.Future):
            stored.add_done_callback(partial(_check_completion, job))

    # -- batches of short sync jobs -----------------------------------------------------

    def _batch_size(self, job: JobRecord) -> int:
        """How many queued jobs of this handler to hand to one thread at once."""
        engine = self.engine
        spec = engine._jobs.get(job.name)
        if spec is None or spec.is_async or engine._gates or job.name in self._unbatchable:
            return 1
        average = self._durations.get(job.name)
        if average is None:
            return 1
        for below, size in _BATCH_SIZES:
            if average < below:
                return size
        return 1

    async def _run_batch(self, slot: _Slot, jobs: list[JobRecord]) -> None:
        engine, loop = self.engine, self._loop
        spec = engine._jobs[jobs[0].name]
        batch = Batch()
        self.running += len(jobs)
        slot.job, slot.jobs, slot.batch = jobs[0], jobs, batch
        interrupted: asyncio.CancelledError | None = None
        try:
            if engine._listening("on_job_started"):
                # Each job of a batch starts right after the one before it, on the same
                # thread, within a millisecond or so: all are about to run.
                for job in jobs:
                    await engine._emit("on_job_started", job=job.snapshot())
            payloads = [json.loads(job.payload) for job in jobs]
            first = jobs[0].timeout
            if first is not None:
                slot.deadline = loop.time() + first
                if slot.deadline < self._watch_at:
                    self._arm(slot.deadline)
            threads = engine._threads
            future = threads.submit(loop, run_batch, spec.fn, payloads, batch, loop.time)
            try:
                await future
            except asyncio.CancelledError as exc:
                threads.abandon(future)
                with batch.lock:
                    batch.cancelled = True
                if slot.expired:
                    _uncancel(slot.task)
                else:  # shutdown: what did not finish goes back to the queue
                    interrupted = exc
            finally:
                slot.deadline = None
            results = batch.results
            for job, (error, elapsed, value) in zip(jobs, results, strict=False):
                if asyncio.iscoroutine(value):  # a sync handler that returned a coroutine
                    self._unbatchable.add(job.name)
                    try:
                        await value
                    except Exception as exc:
                        error = exc
                if error is None:
                    self._completed(job, elapsed)
                else:
                    await self._failed(spec, job, error, elapsed)
            rest = jobs[len(results) :]
            if interrupted is not None:  # shutdown: what did not finish goes back
                if rest:
                    await engine.store.release(rest, self.owner)
                raise interrupted
            if rest and slot.expired and batch.index == len(results):
                timed_out, rest = rest[0], rest[1:]
                await self._failed(
                    spec, timed_out, self._timeout_error(timed_out), timed_out.timeout or 0.0
                )
            slot.batch, slot.jobs, slot.expired = None, [], False
            for job in rest:  # announced as started already: run them one by one
                await self._run(slot, job, announced=True)
        finally:
            slot.job, slot.jobs, slot.batch = None, [], None
            slot.expired = False
            self.running -= len(jobs)
            self._progress.set()

    # -- completions --------------------------------------------------------------------

    def _announce(self, stored: Awaitable[bool], job: JobRecord, elapsed: float) -> None:
        """Emit ``on_job_completed`` once the completion is committed.

        The worker goes on with its next job meanwhile, so that completions keep sharing
        commits when a hook listens; one task emits them, in the order of completion.
        """
        self._completions.append((stored, job, elapsed))
        if self._announcer is None:
            self._announcer = asyncio.create_task(self._announce_loop(), name="dispatch-announcer")
        elif self._announce_wake is not None:
            wake, self._announce_wake = self._announce_wake, None
            wake.set_result(None)

    async def _announce_loop(self) -> None:
        engine, pending = self.engine, self._completions
        while True:
            if not pending:
                if self.stopping and not self.running:
                    break
                self._announce_wake = self._loop.create_future()
                await self._announce_wake
                continue
            stored, job, elapsed = pending[0]
            try:
                applied = await stored
            except Exception as exc:
                logger.error(
                    "storing the completion of job %r (%s) failed: %s; it runs again after "
                    "a restart",
                    job.name,
                    job.id,
                    exc,
                )
                pending.popleft()
                continue
            pending.popleft()
            if applied is False:  # fenced off: the job is another worker's now
                _discarded(job, "completed")
                continue
            await engine._emit(
                "on_job_completed", job=job.snapshot(), elapsed=dt.timedelta(seconds=elapsed)
            )
            self._progress.set()

    # -- timeouts -----------------------------------------------------------------------

    def _arm(self, when: float) -> None:
        if self._watch is not None:
            self._watch.cancel()
        self._watch_at = when
        self._watch = self._loop.call_at(when, self._check_deadlines)

    def _check_deadlines(self) -> None:
        self._watch, self._watch_at = None, _INFINITY
        now, earliest = self._loop.time(), _INFINITY
        for slot in self._slots:
            deadline = slot.deadline
            if deadline is None:
                continue
            batch = slot.batch
            if batch is not None:  # the deadline of the job of the batch running now
                with batch.lock:
                    index = batch.index
                    if index >= 0 and len(batch.results) == index:
                        timeout = slot.jobs[index].timeout
                        deadline = now + 1.0 if timeout is None else batch.began + timeout
                    elif index >= 0:  # between two jobs: look again in a moment
                        deadline = now + 0.005
                    if deadline <= now:
                        batch.cancelled = True  # no further job starts
                    else:
                        slot.deadline = deadline
            if deadline <= now:
                slot.deadline = None
                slot.expired = True
                if slot.task is not None:
                    slot.task.cancel()
            elif deadline < earliest:
                earliest = deadline
        if earliest < _INFINITY:
            self._arm(earliest)

    @staticmethod
    def _timeout_error(job: JobRecord) -> JobTimeoutError:
        return JobTimeoutError(
            f"job {job.name!r} ({job.id}) did not finish within its {job.timeout:g} s timeout"
        )

    def _learn(self, seconds: float, name: str) -> None:
        known = self._durations.get(name)
        self._durations[name] = seconds if known is None else known * 0.9 + seconds * 0.1
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

    # -- failures -----------------------------------------------------------------------

    async def _failed(self, spec: JobSpec, job: JobRecord, exc: Exception, elapsed: float) -> None:
        self._learn(elapsed, job.name)
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
            listening = engine._listening("on_job_retrying")
            gate = engine._hold(job.id) if listening else None
            try:
                applied = await store.retry(job, self.owner)  # fenced by the claim's started_at
                job.started_at = None
                if not applied:
                    _discarded(job, f"failed, to retry: {job.last_error}")
                    return
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
        if await store.bury(job, job.last_error, error_type(exc), trace, self.owner) is None:
            _discarded(job, f"failed: {job.last_error}")
            return
        if engine._listening("on_job_failed"):
            await engine._emit("on_job_failed", job=job.snapshot(JobState.FAILED), error=exc)
        if engine._listening("on_job_dlq"):
            await engine._emit("on_job_dlq", job=job.snapshot(), error=exc)


if sys.version_info >= (3, 11):

    def _uncancel(task: asyncio.Task[Any] | None) -> None:
        """Forget a cancellation the pool itself asked for (a timeout)."""
        if task is not None:
            task.uncancel()

    def _being_cancelled(task: asyncio.Task[Any] | None) -> bool:
        """Whether someone asked to cancel ``task``."""
        return task is None or task.cancelling() > 0

else:  # pragma: no cover - Python 3.10

    def _uncancel(task: asyncio.Task[Any] | None) -> None:
        pass

    def _being_cancelled(task: asyncio.Task[Any] | None) -> bool:
        return True  # 3.10 cannot tell a handler's own CancelledError from a cancel


def _check_completion(job: JobRecord, future: asyncio.Future[Any]) -> None:
    """Say when storing a completion nobody awaited failed, or was fenced off."""
    if future.cancelled():
        return
    exc = future.exception()
    if exc is not None:
        logger.error(
            "storing the completion of job %r (%s) failed: %s; it runs again after a restart",
            job.name,
            job.id,
            exc,
        )
    elif future.result() is False:
        _discarded(job, "completed")


def _discarded(job: JobRecord, outcome: str) -> None:
    """One warning for an attempt whose result the store fenced off."""
    logger.warning(
        "job %s (%r) was taken over by another worker after this worker's lease expired; "
        "its result (%s) is discarded",
        job.id,
        job.name,
        outcome,
    )
