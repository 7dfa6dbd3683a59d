"""The embedded engine: durable jobs, retries, a dead-letter queue, workflows and cron."""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import inspect
import logging
import os
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar, overload

from ..models import Job, WorkflowRun
from ..registry import Registry
from . import backoff as _backoff
from .dlq import DeadLetterQueue
from .errors import UnknownJobError, UnknownWorkflowError
from .jobs import JobSpec, make_spec, new_record
from .lease import Lease, Recovery
from .records import JobRecord, RunRecord, dumps, new_id
from .scheduler import CronScheduler
from .settings import EngineSettings, resolve_config
from .store import Store
from .store_sqlite import SQLiteStore
from .threads import ThreadRunner
from .worker import WorkerPool
from .workflow import WorkflowFunction, execute

if TYPE_CHECKING:
    from ..config import Config
    from ..models import CronEntry

__all__ = ["Engine"]

logger = logging.getLogger("dispatch_ext.engine")

F = TypeVar("F", bound=Callable[..., Any])
W = TypeVar("W", bound=WorkflowFunction)

_HOUSEKEEPING_INTERVAL = 60.0
_RUNS_PER_CLAIM = 100
_STRAY_AFTER = 60.0  # seconds a job may wait before its unknown name is worth a warning


def _ignored(hook: str, exc: Exception) -> None:
    logger.error("%s: extension failure(s) ignored by the engine: %s", hook, exc)


class Engine:
    """An embedded job engine that announces every state change to extensions.

    Args:
        store: Where jobs live: a :class:`SQLiteStore` (the default, on the file named by
            ``[engine] database`` in ``dispatch.toml``, else ``dispatch.sqlite3`` in the
            current directory), a :class:`MemoryStore`, or a path to a SQLite file.
        extensions: Extension objects registered first, before discovered ones.
        autoload: Discover installed extensions (entry-point group
            ``dispatch.extensions``) when the engine starts.
        concurrency: How many jobs run at once (default: ``[engine] concurrency``, else 4).
        config: A :class:`dispatch_ext.config.Config`, a path to a TOML file, or ``None``
            (read ``DISPATCH_CONFIG`` or ``./dispatch.toml`` when present).
    """

    def __init__(
        self,
        store: Store | str | os.PathLike[str] | None = None,
        extensions: Iterable[object] = (),
        autoload: bool = True,
        concurrency: int | None = None,
        config: Config | str | os.PathLike[str] | None = None,
    ) -> None:
        if concurrency is not None and (
            isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1
        ):
            raise ValueError(f"concurrency must be an integer >= 1, got {concurrency!r}")
        self.config = resolve_config(config)
        self.settings = EngineSettings.from_config(self.config)
        if concurrency is None:
            concurrency = self.settings.concurrency
        if store is None:
            store = SQLiteStore(self.settings.database)
        elif isinstance(store, (str, os.PathLike)):
            store = SQLiteStore(store)
        self.store: Store = store
        self.registry = Registry(timeout=self.config.hook_timeout)
        for ext in extensions:
            self.registry.register(ext)
        self.autoload = autoload
        self.concurrency = concurrency
        self.dlq = DeadLetterQueue(self)
        self._listening = self.registry.has_listeners
        self._jobs: dict[str, JobSpec] = {}
        self._names: tuple[str, ...] = ()
        self._workflows: dict[str, WorkflowFunction] = {}
        self._cron = CronScheduler(self)
        self._gates: dict[str, asyncio.Future[None]] = {}
        self._threads = ThreadRunner(concurrency)
        self._pool: WorkerPool | None = None
        self._lease: Lease | None = None
        self._runs_wanted: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runs: set[asyncio.Task[None]] = set()
        self._open_lock: asyncio.Lock | None = None
        self._stopped: asyncio.Future[None] | None = None  # set while stop() runs
        self._opened = False
        self._started = False
        self.stopping = False

    def __repr__(self) -> str:
        state = "running" if self._started else "stopped"
        return f"<Engine {state} store={self.store!r} jobs={len(self._jobs)}>"

    # -- registration -------------------------------------------------------------------

    @overload
    def job(self, name: F) -> F: ...

    @overload
    def job(
        self,
        name: str,
        *,
        queue: str = ...,
        max_retries: int = ...,
        timeout: float | None = ...,
        backoff: float | _backoff.Backoff | None = ...,
    ) -> Callable[[F], F]: ...

    def job(
        self,
        name: str | F,
        *,
        queue: str = "default",
        max_retries: int = 3,
        timeout: float | None = 300.0,
        backoff: float | _backoff.Backoff | None = None,
    ) -> Callable[[F], F] | F:
        """Register a job handler: a sync or async function taking the payload.

        Args:
            name: The job's name, used by :meth:`enqueue`.
            queue: A label kept with every job.
            max_retries: Retries after the first attempt before the job is dead.
            timeout: Seconds an attempt may run (``None``: no limit). A sync handler runs
                in a thread that cannot be killed: past the timeout the attempt counts as
                failed and the thread is left to finish on its own.
            backoff: Seconds before a retry, or a callable ``attempt -> seconds`` (see
                :mod:`dispatch_ext.engine.backoff`); default: exponential with jitter,
                1 s to 60 s.
        """
        if callable(name):  # used bare: @engine.job
            return self.job(name.__name__)(name)
        job_name = name

        def register(fn: F) -> F:
            self._add_job(job_name, fn, queue, max_retries, timeout, backoff)
            return fn

        return register

    def _add_job(
        self,
        name: str,
        fn: Callable[..., Any],
        queue: str,
        max_retries: int,
        timeout: float | None,
        backoff: float | _backoff.Backoff | None,
    ) -> None:
        spec = make_spec(name, fn, queue, max_retries, timeout, backoff)
        if name in self._jobs:
            raise ValueError(
                f"job {name!r} is already registered (by {self._jobs[name].fn!r}); pick "
                "another name"
            )
        self._jobs[name] = spec
        self._names = tuple(sorted(self._jobs))
        if self._pool is not None:
            self._pool.wake()

    def workflow(self, name: str) -> Callable[[W], W]:
        """Register ``async def fn(wf, payload)`` as the workflow ``name``.

        Inside, ``await wf.step(step_name, fn, *args)`` runs a checkpointed step. A run
        is not retried: a step that raises (and is not caught) fails the run.
        """
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"a workflow name must be a non-empty string, got {name!r}")

        def register(fn: W) -> W:
            is_async: bool = inspect.iscoroutinefunction(fn)
            if not is_async:
                raise TypeError(f"workflow {name!r}: {fn!r} must be an 'async def fn(wf, payload)'")
            if name in self._workflows:
                raise ValueError(f"workflow {name!r} is already registered; pick another name")
            self._workflows[name] = fn
            return fn

        return register

    def cron(
        self, name: str, schedule: str, job: str | Callable[..., Any], payload: Any = None
    ) -> CronEntry:
        """Enqueue ``job`` with ``payload`` on a schedule, in UTC, while the engine runs.

        ``schedule`` has five fields (minute hour day-of-month month day-of-week) or six
        with a leading seconds field (``"*/5 * * * * *"``: every five seconds). A
        malformed expression is refused at once, naming the entry and the field.
        Missed fire times (while no engine ran) are not made up. Returns the entry,
        with its next fire time from now as ``next_run_at``.
        """
        job_name = job if isinstance(job, str) else self._job_name_of(name, job)
        entry = self._cron.add(name, schedule, job_name, payload)
        if self._started and not self.stopping:
            self._cron.check(self._jobs)
            self._cron.start()
        return entry.snapshot()

    def _job_name_of(self, entry: str, fn: Callable[..., Any]) -> str:
        for spec in self._jobs.values():
            if spec.fn is fn:
                return spec.name
        raise UnknownJobError(
            f"cron entry {entry!r}: {fn!r} is not a registered job; decorate it with "
            "@engine.job(name) first, or pass the job's name"
        )

    # -- lifecycle ----------------------------------------------------------------------

    async def _open(self) -> None:
        if self._opened:
            return
        if self._open_lock is None:
            self._open_lock = asyncio.Lock()
        async with self._open_lock:
            if self._is_open():  # another task opened it while this one waited
                return
            await self.store.open()
            if self.autoload:
                try:
                    self.registry.load_entrypoints(self.config)
                except BaseException:  # strict discovery refused: leave nothing open
                    await self.store.close()
                    raise
            self._opened = True

    def _is_open(self) -> bool:
        return self._opened

    async def start(self) -> None:
        """Open the store, discover extensions, start the workers and cron.

        The engine registers in the store as a worker and keeps a heartbeat there. Jobs
        left ``running`` by a worker that is gone (its process exited, or no heartbeat
        for ``[engine] lease_timeout`` seconds) go back to the queue, and workflow runs
        nobody holds (interrupted, or started by a process that only enqueues) resume
        or start here; other live workers' jobs are left alone. ``async with engine:``
        calls this.
        """
        if self._started:
            return
        self._cron.check(self._jobs)
        self.stopping = False
        await self._open()
        lease = Lease(self.store, self.settings.lease_timeout, self._recovered)
        await lease.start()  # on failure the engine stays open, not started: stop() closes
        self._lease = lease
        self._runs_wanted = asyncio.Event()
        self._pool = WorkerPool(self, self.concurrency)
        self._pool.start()
        self._started = True
        await self._claim_runs()
        self._spawn(self._watch_runs(), "dispatch-runs")
        self._spawn(self._watch_strays(), "dispatch-strays")
        self._cron.start()
        if self.settings.keep_completed > 0:
            self._spawn(self._housekeeping(), "dispatch-housekeeping")

    @property
    def worker_id(self) -> str | None:
        """This engine's id as a worker in its store, while it is started."""
        return None if self._lease is None else self._lease.identity.id

    def _recovered(self, recovery: Recovery) -> None:
        """Work of a gone worker is free again: look for it now.

        When this worker itself had been presumed gone, it lets go of the jobs it
        claimed but did not start (the store fences off what it was running).
        """
        pool = self._pool
        if pool is not None:
            if recovery.rejoined:
                self._spawn(pool.drop_claimed(), "dispatch-drop-claimed")
            pool.wake()
        if (recovery.runs or recovery.rejoined) and self._runs_wanted is not None:
            self._runs_wanted.set()

    async def stop(self, timeout: float | None = None) -> None:
        """Shut down gracefully.

        Stop taking work and firing cron entries, let running jobs and workflow steps
        finish for up to ``timeout`` seconds (default: ``[engine] shutdown_timeout``,
        30 s), put back what did not finish, emit ``on_shutdown``, close the store.
        """
        if not self._opened:
            return
        if self._stopped is not None:  # a shutdown is under way: wait for it
            await asyncio.shield(self._stopped)
            return
        self._stopped = asyncio.get_running_loop().create_future()
        try:
            await self._shut_down(self.settings.shutdown_timeout if timeout is None else timeout)
        finally:
            self._stopped.set_result(None)
            self._stopped = None

    async def _shut_down(self, timeout: float) -> None:
        self.stopping = True
        deadline = time.monotonic() + timeout
        await self._cron.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._pool is not None:
            await self._pool.stop(max(0.0, deadline - time.monotonic()))
        if self._runs:
            _, late = await asyncio.wait(self._runs, timeout=max(0.0, deadline - time.monotonic()))
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        self._pool = None
        self._started = False
        lease, self._lease = self._lease, None
        if lease is not None:  # put back what is left, free the runs, deregister
            try:
                await lease.stop()
            except Exception as exc:
                logger.error("%r: deregistering this worker failed: %s", self.store, exc)
        if self._listening("on_shutdown"):
            await self._emit("on_shutdown")
        await self.store.close()
        self._threads.shutdown()
        self.registry.close()
        self._opened = False
        self._open_lock = None

    def _hurry(self) -> None:
        """Stop waiting for running jobs and workflows (a second signal)."""
        if self._pool is not None:
            self._pool.hurry()
        for task in self._runs:
            task.cancel()

    async def __aenter__(self) -> Engine:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def run(self, *, shutdown_timeout: float | None = None) -> None:
        """Run until SIGINT or SIGTERM, then shut down gracefully (blocking).

        A second signal during the shutdown stops waiting for running jobs; they go back
        to the queue.
        """
        from .shutdown import serve

        serve(self, shutdown_timeout)

    @property
    def running(self) -> bool:
        """Whether the workers are started."""
        return self._started

    # -- enqueueing ---------------------------------------------------------------------

    async def enqueue(self, name: str, payload: Any = None, **opts: Any) -> Job:
        """Store a job and return its snapshot (state ``pending``).

        Returns once the job is committed: from then on it survives a crash.

        Args:
            name: A registered job.
            payload: JSON-serialisable data handed to the handler.
            **opts: ``priority`` (int, higher first; default 0), ``delay`` (seconds or
                ``timedelta``) or ``run_at`` (aware ``datetime``), ``queue``,
                ``max_retries``, ``timeout`` (override the job's defaults).

        Raises:
            UnknownJobError: no job of that name (with a suggestion).
            PayloadError: the payload is not JSON-serialisable.
        """
        job = self._new_job(name, payload, opts)
        return await self._enqueue(job)

    def _new_job(self, name: str, payload: Any, opts: dict[str, Any]) -> JobRecord:
        spec = self._jobs.get(name)
        if spec is None:
            raise UnknownJobError(self._unknown("job", name, self._jobs, "@engine.job"))
        return new_record(spec, payload, opts)

    async def _enqueue(self, job: JobRecord, after: Callable[[Job], Any] | None = None) -> Job:
        if not self._opened:
            await self._open()
        await self.store.add_job(job)  # gives the job its id
        # No await between the insert and here: a worker cannot have the job yet.
        if self._pool is not None:
            self._pool.wake()
        snapshot = job.snapshot()
        listening = self._listening("on_job_enqueued")
        if listening and after is None and self._emit_now("on_job_enqueued", {"job": snapshot}):
            return snapshot  # heard without yielding: no worker can have started the job
        # The hook (async implementations) or ``after`` yields: hold workers back.
        gate = self._hold(job.id) if listening or after is not None else None
        try:
            if listening:
                await self._emit("on_job_enqueued", job=snapshot)
            if after is not None:
                await after(snapshot)
            return snapshot
        finally:
            if gate is not None:
                self._release(job.id, gate)

    def _hold(self, job_id: str) -> asyncio.Future[None]:
        """Keep workers from starting ``job_id`` until its hook has been heard."""
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._gates[job_id] = gate
        return gate

    def _release(self, job_id: str, gate: asyncio.Future[None]) -> None:
        if self._gates.get(job_id) is gate:
            del self._gates[job_id]
        if not gate.done():
            gate.set_result(None)

    def _unknown(self, kind: str, name: object, known: Iterable[str], how: str) -> str:
        choices = list(known)
        close = difflib.get_close_matches(str(name), choices, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else "."
        listing = ", ".join(repr(c) for c in sorted(choices)) or "none"
        return (
            f"no {kind} named {name!r} is registered on this engine{hint} Registered: "
            f"{listing}. Register it with {how}({name!r})."
        )

    # -- workflows ----------------------------------------------------------------------

    async def start_workflow(self, name: str, payload: Any = None) -> WorkflowRun:
        """Store a new run of workflow ``name`` and return its snapshot (``running``).

        A started engine runs it at once. An engine that is not started (a process that
        only enqueues) stores it for the workers: a started engine on the same store
        picks it up within ``[engine] poll_interval`` (or at its start).
        ``on_workflow_started`` fires here, in the process that started the run, once.
        """
        if name not in self._workflows:
            raise UnknownWorkflowError(
                self._unknown("workflow", name, self._workflows, "@engine.workflow")
            )
        text = dumps(payload, f"the payload of workflow {name!r}")
        await self._open()
        run = RunRecord(id=new_id(), name=name, input=text, started_at=time.time())
        owner = self.worker_id if self._started and not self.stopping else None
        await self.store.add_run(run, owner)
        snapshot = run.snapshot()
        if self._listening("on_workflow_started"):
            await self._emit("on_workflow_started", run=snapshot)
        if owner is not None and self._started and not self.stopping:
            self._spawn_run(run, {}, False, owner, 1)  # add_run counts the first claim
        return snapshot

    async def _claim_runs(self) -> None:
        """Take the free runs of the workflows registered here and run them."""
        owner = self.worker_id
        while self._workflows and owner is not None and self._started and not self.stopping:
            claimed = await self.store.claim_runs(tuple(self._workflows), owner, _RUNS_PER_CLAIM)
            for run, claim in claimed:
                checkpoints = await self.store.load_steps(run.id)
                resumed = claim > 1 or bool(checkpoints)
                if resumed:
                    logger.info("resuming workflow run %s (%s)", run.id, run.name)
                self._spawn_run(run, checkpoints, resumed, owner, claim)
            if len(claimed) < _RUNS_PER_CLAIM:
                return

    async def _watch_runs(self) -> None:
        """Pick up runs started by other processes, or freed by a gone worker."""
        wanted = self._runs_wanted
        poll = self.settings.poll_interval
        while not self.stopping and wanted is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(wanted.wait(), poll)
            wanted.clear()
            try:
                await self._claim_runs()
            except Exception:
                logger.exception("claiming workflow runs from %r failed; trying again", self.store)

    def _spawn_run(
        self, run: RunRecord, checkpoints: dict[str, str], resumed: bool, owner: str, claim: int
    ) -> None:
        task = asyncio.create_task(self._run_workflow(run, checkpoints, resumed, owner, claim))
        self._runs.add(task)
        task.add_done_callback(self._runs.discard)

    async def _run_workflow(
        self, run: RunRecord, checkpoints: dict[str, str], resumed: bool, owner: str, claim: int
    ) -> None:
        try:
            await execute(self, self._workflows[run.name], run, checkpoints, resumed, owner, claim)
        finally:
            if self._pool is not None:
                self._pool._progress.set()

    async def get_run(self, run_id: str) -> WorkflowRun | None:
        """The stored state of a workflow run, or ``None``."""
        await self._open()
        run = await self.store.get_run(run_id)
        return None if run is None else run.snapshot()

    # -- waiting, reading ---------------------------------------------------------------

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until no job is pending, running or retrying and no workflow runs.

        Delayed jobs and scheduled retries count: they are waited for.

        Raises:
            RuntimeError: the engine is not running (``async with engine:`` first).
            TimeoutError: ``timeout`` seconds passed first.
        """
        pool = self._pool
        if pool is None or not self._started:
            raise RuntimeError("drain() needs a running engine: use 'async with engine:' first")
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._started and not self.stopping:
            if not pool.busy and not self._runs:
                left = await self.store.count_active(self._names)
                if left == 0 and self._workflows:  # runs not picked up yet, or elsewhere
                    left = await self.store.count_active_runs(tuple(self._workflows))
                if left == 0 and not pool.busy and not self._runs:
                    return
            wait = 0.25
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    counts = await self.store.counts()
                    raise TimeoutError(
                        f"drain() gave up after {timeout:g} s: {counts['pending']} pending, "
                        f"{counts['running']} running, {counts['retrying']} retrying job(s), "
                        f"{len(self._runs)} workflow run(s) active"
                    )
                wait = min(wait, remaining)
            await pool.wait_progress(wait)

    async def get_job(self, job_id: str) -> Job | None:
        """The stored state of a job, or ``None``."""
        await self._open()
        job = await self.store.get_job(job_id)
        return None if job is None else job.snapshot()

    async def counts(self) -> dict[str, int]:
        """Number of stored jobs per state (``pending``, ``running``, ``retrying``,
        ``completed``, ``failed``, ``dead``)."""
        await self._open()
        return await self.store.counts()

    # -- internals ----------------------------------------------------------------------

    async def _emit(self, hook: str, /, **kwargs: Any) -> None:
        """Emit through the registry; a failure there never reaches the job's state."""
        if self._emit_now(hook, kwargs):
            return
        try:
            await self.registry.aemit(hook, **kwargs)
        except Exception as exc:  # strict registries raise an ExceptionGroup after all ran
            _ignored(hook, exc)

    def _emit_now(self, hook: str, kwargs: dict[str, Any]) -> bool:
        """Emit ``hook`` without yielding, unless an implementation is async.

        Returns ``False`` (and calls nothing) when one is: :meth:`_emit` awaits them.
        """
        registry = self.registry
        if registry.has_async_listeners(hook):
            return False
        try:
            registry.emit(hook, **kwargs)
        except Exception as exc:
            _ignored(hook, exc)
        return True

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch_strays(self) -> None:
        """Warn once per job name that waits in the store with no handler here.

        A job only a worker with a handler for its name can run; if none runs, it waits
        forever. Every ``_STRAY_AFTER`` seconds this worker looks for jobs that have
        been due for that long under a name it does not know (one indexed query over the
        waiting jobs) and warns once per name.
        """
        warned: set[str] = set()
        while not self.stopping:
            await asyncio.sleep(_STRAY_AFTER)
            try:
                names = await self.store.waiting_names(time.time() - _STRAY_AFTER)
            except Exception:
                logger.exception("looking for jobs nobody runs in %r failed", self.store)
                continue
            for name in names:
                if name not in self._jobs and name not in warned:
                    warned.add(name)
                    logger.warning(
                        "%r: jobs named %r have been waiting for over %g s and this worker "
                        "has no handler for them; unless another worker on this store "
                        "registers %r, they stay pending: register it with "
                        "@engine.job(%r) in the workers",
                        self.store,
                        name,
                        _STRAY_AFTER,
                        name,
                        name,
                    )

    async def _housekeeping(self) -> None:
        keep = self.settings.keep_completed
        while not self.stopping:
            try:
                removed = await self.store.prune(time.time() - keep)
                if removed:
                    logger.debug("pruned %d completed job(s)", removed)
            except Exception:
                logger.exception("pruning completed jobs failed")
            await asyncio.sleep(_HOUSEKEEPING_INTERVAL)
