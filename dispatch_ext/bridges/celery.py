"""The Celery bridge: dispatch-ext extensions hear the lifecycle of Celery tasks.

::

    from celery import Celery
    from dispatch_ext.bridges.celery import install

    app = Celery("proj", broker="redis://127.0.0.1:6379/0")
    install(app)

:func:`install` connects handlers to Celery's signals. Each process builds its own
registry when it needs one: a pool process when it boots (``worker_process_init``; the
main process of a ``solo``/``threads`` worker at ``worker_init``), a producer or
``celery beat`` on its first publish. Extensions are discovered there through the
``dispatch.extensions`` entry points, so one ``pip install`` reaches every worker.

How the hooks map onto Celery (the documentation page has the full table):

- enqueued: ``after_task_publish`` with ``retries == 0`` (a retry re-publishes the same id);
- started / completed / retrying / failed: ``task_prerun`` / ``task_success`` /
  ``task_retry`` / ``task_failure`` (Celery fires the last only when no retry remains);
- dlq: ``task_failure`` of a message Celery rejects without requeueing (``Reject(requeue
  =False)``, or ``acks_late`` with ``acks_on_failure=False``) when the task's queue
  declares ``x-dead-letter-exchange`` on an AMQP broker;
- workflows: chains, with the chain's ``root_id`` as the run id;
- cron fired: a publish carrying beat's ``celery_beat_task`` header;
- shutdown: ``worker_process_shutdown`` in pool processes, ``worker_shutdown`` in the main
  process, once per process that holds extensions.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import weakref
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from celery import signals
from celery.exceptions import Reject, TimeLimitExceeded, WorkerLostError

from ..models import CronEntry, Job, JobState, RunState, WorkflowRun, freeze
from ..registry import Registry
from ._common import (
    UNLIMITED_RETRIES,
    ProcessRegistry,
    Timers,
    guarded,
    job_snapshot,
    json_safe,
    logger,
    to_utc,
    utc_now,
)

__all__ = ["BEAT_HEADER", "WORKFLOW_HEADER", "CeleryBridge", "install"]

WORKFLOW_HEADER = "dispatch_ext_workflow"
"""Message header the bridge adds to the second and later steps of a chain (and to the
retries of its first step): ``{"id": run id, "name": ..., "started_at": ISO 8601}``."""

BEAT_HEADER = "celery_beat_task"
"""Header ``celery beat`` adds to every task it publishes."""

_AMQP_SCHEMES = frozenset({"amqp", "amqps", "pyamqp", "librabbitmq"})
_bridges: weakref.WeakKeyDictionary[Any, CeleryBridge] = weakref.WeakKeyDictionary()
_uids = itertools.count()
_guarded = guarded("celery")


def install(
    app: Any,
    *,
    registry: Registry | None = None,
    extensions: Iterable[object] = (),
    autoload: bool = True,
    config: Any = None,
) -> CeleryBridge:
    """Make dispatch-ext extensions hear the tasks of the Celery ``app``.

    Call it where the app is defined, so that workers, producers and ``celery beat`` all
    run it. Installing twice on one app returns the first bridge.

    Args:
        app: The :class:`celery.Celery` application.
        registry: Use this registry in every process instead of building one per process.
        extensions: Extension objects to register in addition to the discovered ones.
        autoload: Discover installed extensions (entry points ``dispatch.extensions``).
        config: A :class:`dispatch_ext.config.Config` for discovery; ``None`` reads
            ``dispatch.toml`` / ``DISPATCH_CONFIG`` and the environment switches.
    """
    existing = _bridges.get(app)
    if existing is not None:
        return existing
    processes = ProcessRegistry(
        registry=registry,
        extensions=extensions,
        autoload=autoload,
        config=config,
        engine="celery",
    )
    bridge = CeleryBridge(app, processes)
    bridge.connect()
    _bridges[app] = bridge
    return bridge


@dataclass(frozen=True)
class _Workflow:
    """The chain a task belongs to, read from its request."""

    id: str
    name: str
    started_at: dt.datetime | None
    first: bool
    last: bool

    def header(self) -> dict[str, Any]:
        started = self.started_at.isoformat() if self.started_at else None
        return {"id": self.id, "name": self.name, "started_at": started}

    def run(self, state: RunState, **fields: Any) -> WorkflowRun:
        return WorkflowRun(
            id=self.id, name=self.name, state=state, started_at=self.started_at, **fields
        )


class CeleryBridge:
    """The signal handlers of one Celery app; see :func:`install`."""

    def __init__(self, app: Any, processes: ProcessRegistry) -> None:
        self.app = app
        self.processes = processes
        self.timers = Timers()
        self._runs_started: dict[str, dt.datetime] = {}
        self._beat_service: Any = None
        self._uid = f"dispatch_ext.bridges.celery:{next(_uids)}"
        self._connected: list[tuple[Any, str]] = []

    @property
    def registry(self) -> Registry:
        """The registry of the current process (built on first use)."""
        return self.processes.get()

    # -- wiring -------------------------------------------------------------------------

    def connect(self) -> None:
        """Connect the handlers to Celery's signals (done by :func:`install`)."""
        pairs = [
            (signals.worker_init, self._on_worker_init),
            (signals.worker_process_init, self._on_worker_process_init),
            (signals.worker_process_shutdown, self._on_process_shutdown),
            (signals.worker_shutdown, self._on_worker_shutdown),
            (signals.beat_init, self._on_beat_init),
            (signals.before_task_publish, self._on_before_publish),
            (signals.after_task_publish, self._on_after_publish),
            (signals.task_prerun, self._on_prerun),
            (signals.task_success, self._on_success),
            (signals.task_retry, self._on_retry),
            (signals.task_failure, self._on_failure),
            (signals.task_postrun, self._on_postrun),
        ]
        for signal, handler in pairs:
            uid = f"{self._uid}:{handler.__name__}"
            signal.connect(handler, weak=False, dispatch_uid=uid)
            self._connected.append((signal, uid))

    def disconnect(self) -> None:
        """Disconnect every handler; the app's tasks are no longer reported."""
        for signal, uid in self._connected:
            signal.disconnect(dispatch_uid=uid)
        self._connected.clear()
        _bridges.pop(self.app, None)

    def _ours(self, task: Any) -> bool:
        app = getattr(task, "_app", None)
        return app is None or app is self.app

    # -- process life -------------------------------------------------------------------

    @_guarded
    def _on_worker_init(self, sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", self.app) is not self.app:
            return
        pool = getattr(sender, "pool_cls", None)
        pool_name = f"{getattr(pool, '__module__', '')}.{getattr(pool, '__name__', pool)}"
        if "prefork" not in pool_name:
            # solo/threads/gevent: tasks run in this process, which boots here.
            # prefork: the pool processes boot in worker_process_init instead.
            self.processes.get()

    @_guarded
    def _on_worker_process_init(self, **_: Any) -> None:
        self.processes.get()

    @_guarded
    def _on_process_shutdown(self, **_: Any) -> None:
        self.processes.shutdown()

    @_guarded
    def _on_worker_shutdown(self, sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", self.app) is self.app:
            self.processes.shutdown()

    @_guarded
    def _on_beat_init(self, sender: Any = None, **_: Any) -> None:
        if getattr(sender, "app", self.app) is self.app:
            self._beat_service = sender

    # -- producer side ------------------------------------------------------------------

    @_guarded
    def _on_before_publish(self, headers: Any = None, **_: Any) -> None:
        """Carry the chain's run to its next step, and to a retry of the current step."""
        if not isinstance(headers, dict):
            return
        task = self.app.current_worker_task
        if task is None or not self._ours(task):
            return
        request = task.request
        workflow = self._workflow_of(task, request)
        if workflow is None:
            return
        task_id = headers.get("id")
        chain = request.chain or []
        if task_id == request.id or (chain and _signature_id(chain[-1]) == task_id):
            headers[WORKFLOW_HEADER] = workflow.header()

    @_guarded
    def _on_after_publish(
        self,
        sender: Any = None,
        body: Any = None,
        headers: Any = None,
        routing_key: Any = None,
        **_: Any,
    ) -> None:
        headers = headers if isinstance(headers, Mapping) else {}
        info = headers if "id" in headers else body if isinstance(body, Mapping) else {}
        if info.get("retries"):
            return  # a retry re-publishes the same task id: not an enqueue
        name = str(sender or info.get("task") or "")
        args, kwargs = _body_arguments(body)
        job = functools.cache(lambda: self._published_job(name, info, args, kwargs, routing_key))
        self.processes.emit("on_job_enqueued", lambda: {"job": job()})
        if headers.get(BEAT_HEADER):
            self.processes.emit(
                "on_cron_fired",
                lambda: {"entry": self._cron_entry(name, args, kwargs), "job": job()},
            )

    def _published_job(
        self,
        name: str,
        info: Mapping[str, Any],
        args: Any,
        kwargs: Any,
        routing_key: Any,
    ) -> Job:
        task = self.app.tasks.get(name)
        timelimit = info.get("timelimit") or (None, None)
        return job_snapshot(
            id=str(info.get("id")),
            name=name,
            queue=str(routing_key or self._default_queue()),
            args=args,
            kwargs=kwargs,
            state=JobState.PENDING,
            max_retries=_max_retries(task),
            retry_count=0,
            run_at=to_utc(info.get("eta")),
            created_at=utc_now(),
            timeout=_seconds(timelimit[0] if timelimit else None),
        )

    # -- worker side --------------------------------------------------------------------

    @_guarded
    def _on_prerun(self, task_id: Any = None, task: Any = None, **_: Any) -> None:
        if task is None or not self._ours(task):
            return
        request = task.request
        started_at = self.timers.start(str(task_id))
        workflow = self._workflow_of(task, request)
        if workflow is not None and workflow.first and not request.retries:
            self._runs_started[workflow.id] = started_at
            workflow = replace(workflow, started_at=started_at)
            self.processes.emit(
                "on_workflow_started",
                lambda: {
                    "run": workflow.run(RunState.RUNNING, input=_payload(request)),
                },
            )
        self.processes.emit(
            "on_job_started",
            lambda: {"job": self._job(task, request, JobState.RUNNING, started_at=started_at)},
        )

    @_guarded
    def _on_success(
        self, sender: Any = None, result: Any = None, runtime: Any = None, **_: Any
    ) -> None:
        if sender is None or not self._ours(sender):
            return
        task, request = sender, sender.request
        timed, started_at = self.timers.stop(str(request.id))
        seconds = _seconds(runtime)
        elapsed = dt.timedelta(seconds=seconds) if seconds is not None else timed or dt.timedelta(0)
        now = utc_now()
        self.processes.emit(
            "on_job_completed",
            lambda: {
                "job": self._job(
                    task, request, JobState.COMPLETED, started_at=started_at, completed_at=now
                ),
                "elapsed": elapsed,
            },
        )
        workflow = self._workflow_of(task, request)
        if workflow is None:
            return
        self.processes.emit(
            "on_workflow_step_completed",
            lambda: {"run": workflow.run(RunState.RUNNING), "step": task.name, "elapsed": elapsed},
        )
        if workflow.last:
            total = now - workflow.started_at if workflow.started_at else elapsed
            self.processes.emit(
                "on_workflow_completed",
                lambda: {
                    "run": workflow.run(
                        RunState.COMPLETED, output=freeze(json_safe(result)), completed_at=now
                    ),
                    "elapsed": total,
                },
            )

    @_guarded
    def _on_retry(
        self, sender: Any = None, request: Any = None, reason: Any = None, **_: Any
    ) -> None:
        if sender is None or request is None or not self._ours(sender):
            return
        task = sender
        error = getattr(reason, "exc", None) or reason
        if not isinstance(error, BaseException):
            error = RuntimeError(f"task {task.name}[{request.id}] is retried")
        attempt = int(request.retries or 0) + 1
        next_run_at = _next_run(getattr(reason, "when", None))
        self.timers.stop(str(request.id))
        self.processes.emit(
            "on_job_retrying",
            lambda: {
                "job": self._job(
                    task,
                    request,
                    JobState.RETRYING,
                    retry_count=attempt,
                    last_error=_describe(error),
                    run_at=next_run_at,
                ),
                "error": error,
                "attempt": attempt,
                "next_run_at": next_run_at,
            },
        )

    @_guarded
    def _on_failure(
        self,
        sender: Any = None,
        task_id: Any = None,
        exception: Any = None,
        args: Any = None,
        kwargs: Any = None,
        **_: Any,
    ) -> None:
        """Terminal failure: Celery sends ``task_failure`` only when no retry remains."""
        if sender is None or not self._ours(sender):
            return
        task, task_id = sender, str(task_id)
        error = exception if isinstance(exception, BaseException) else RuntimeError(str(exception))
        request = sender.request if getattr(sender.request, "id", None) == task_id else None
        started_at = self.timers.stop(task_id)[1]
        now = utc_now()

        def failed_job() -> Job:
            if request is not None:
                return self._job(
                    task,
                    request,
                    JobState.FAILED,
                    last_error=_describe(error),
                    started_at=started_at,
                    completed_at=now,
                )
            return job_snapshot(
                id=task_id,
                name=task.name,
                queue=self._default_queue(),
                args=args,
                kwargs=kwargs,
                state=JobState.FAILED,
                max_retries=_max_retries(task),
                last_error=_describe(error),
                completed_at=now,
            )

        job = functools.cache(failed_job)
        self.processes.emit("on_job_failed", lambda: {"job": job(), "error": error})
        if _rejected_without_requeue(task, error) and self._dead_lettered(task):
            self.processes.emit(
                "on_job_dlq", lambda: {"job": replace(job(), state=JobState.DEAD), "error": error}
            )
        workflow = self._workflow_of(task, request) if request is not None else None
        if workflow is None:
            return
        self.processes.emit(
            "on_workflow_step_failed",
            lambda: {"run": workflow.run(RunState.RUNNING), "step": task.name, "error": error},
        )
        self.processes.emit(
            "on_workflow_failed",
            lambda: {
                "run": workflow.run(RunState.FAILED, error=_describe(error), completed_at=now),
                "error": error,
            },
        )

    @_guarded
    def _on_postrun(self, task_id: Any = None, task: Any = None, **_: Any) -> None:
        if task is None or not self._ours(task):
            return
        self.timers.stop(str(task_id))
        request = task.request
        if request.chain and not _stamp(request):
            self._runs_started.pop(str(request.root_id or request.id), None)

    # -- reading Celery's data ----------------------------------------------------------

    def _default_queue(self) -> str:
        return str(self.app.conf.task_default_queue or "celery")

    def _job(self, task: Any, request: Any, state: JobState, **fields: Any) -> Job:
        delivery = request.delivery_info or {}
        timelimit = request.timelimit or (None, None)
        values: dict[str, Any] = {
            "priority": int(delivery.get("priority") or 0),
            "max_retries": _max_retries(task),
            "retry_count": int(request.retries or 0),
            "run_at": to_utc(request.eta),
            "timeout": _seconds(timelimit[0]) or _seconds(getattr(task, "time_limit", None)),
        }
        values.update(fields)
        return job_snapshot(
            id=str(request.id),
            name=task.name,
            queue=str(delivery.get("routing_key") or self._default_queue()),
            args=request.args,
            kwargs=request.kwargs,
            state=state,
            **values,
        )

    def _workflow_of(self, task: Any, request: Any) -> _Workflow | None:
        """The chain ``request`` is a step of, or ``None`` outside a chain."""
        chain = request.chain
        stamp = _stamp(request)
        if stamp is not None:
            return _Workflow(
                id=str(stamp["id"]),
                name=str(stamp.get("name") or task.name),
                started_at=to_utc(stamp.get("started_at")),
                first=False,
                last=not chain,
            )
        if not chain:
            return None  # not in a chain (None), or a last step the bridge did not stamp
        run_id = str(request.root_id or request.id)
        names = [task.name, *(_signature_name(s) for s in reversed(chain))]
        return _Workflow(
            id=run_id,
            name=" | ".join(names),
            started_at=self._runs_started.get(run_id),
            first=True,
            last=False,
        )

    def _cron_entry(self, name: str, args: Any, kwargs: Any) -> CronEntry:
        payload = freeze({"args": json_safe(list(args)), "kwargs": json_safe(dict(kwargs))})
        entry = self._beat_entry(name, args, kwargs)
        if entry is None:
            return CronEntry(name=name, schedule="", job_name=name, payload=payload)
        next_run_at = None
        try:
            remaining = entry.schedule.remaining_estimate(entry.last_run_at)
            next_run_at = utc_now() + max(remaining, dt.timedelta(0))
        except Exception:
            logger.debug("celery bridge: no next run time for beat entry %r", entry.name)
        return CronEntry(
            name=str(entry.name),
            schedule=_describe_schedule(entry.schedule),
            job_name=str(entry.task),
            payload=payload,
            next_run_at=next_run_at,
        )

    def _beat_entry(self, name: str, args: Any, kwargs: Any) -> Any:
        service = self._beat_service
        if service is None:
            return None
        try:
            entries = [e for e in service.scheduler.schedule.values() if e.task == name]
        except Exception:
            return None
        if len(entries) > 1:
            same = [
                e
                for e in entries
                if list(e.args or ()) == list(args) and dict(e.kwargs or {}) == dict(kwargs)
            ]
            entries = same or entries
        return entries[0] if entries else None

    def _dead_lettered(self, task: Any) -> bool:
        """Whether a rejected message of ``task`` reaches a dead-letter queue."""
        try:
            url = str(self.app.conf.broker_write_url or self.app.conf.broker_url or "amqp://")
            if url.split("://", 1)[0].lower() not in _AMQP_SCHEMES:
                return False
            options = {
                key: getattr(task, key)
                for key in ("queue", "exchange", "routing_key")
                if getattr(task, key, None)
            }
            queue = self.app.amqp.router.route(options, task.name).get("queue")
            arguments = getattr(queue, "queue_arguments", None) or {}
            return "x-dead-letter-exchange" in arguments
        except Exception:
            logger.debug("celery bridge: no queue found for %s", task.name, exc_info=True)
            return False


def _rejected_without_requeue(task: Any, error: BaseException) -> bool:
    """Whether Celery rejects the failed message without requeueing it (see Request)."""
    if isinstance(error, Reject):
        return True  # task_failure is only sent for Reject(requeue=False)
    if not getattr(task, "acks_late", False) or isinstance(error, TimeLimitExceeded):
        return False  # acknowledged early; or a timeout: acknowledged or requeued
    if isinstance(error, WorkerLostError) and getattr(task, "reject_on_worker_lost", False):
        return False  # requeued
    return getattr(task, "acks_on_failure", None) is False


def _stamp(request: Any) -> Mapping[str, Any] | None:
    headers = request.headers if isinstance(request.headers, Mapping) else {}
    stamp = headers.get(WORKFLOW_HEADER, getattr(request, WORKFLOW_HEADER, None))
    return stamp if isinstance(stamp, Mapping) and stamp.get("id") else None


def _signature_id(signature: Any) -> Any:
    try:
        return signature["options"].get("task_id")
    except (KeyError, TypeError, AttributeError):
        return None


def _signature_name(signature: Any) -> str:
    try:
        return str(signature["task"])
    except (KeyError, TypeError):
        return "?"


def _body_arguments(body: Any) -> tuple[list[Any], dict[str, Any]]:
    if isinstance(body, (list, tuple)) and len(body) >= 2:
        args, kwargs = body[0], body[1]
    elif isinstance(body, Mapping):
        args, kwargs = body.get("args"), body.get("kwargs")
    else:
        args, kwargs = (), {}
    return list(args or ()), dict(kwargs or {})


def _payload(request: Any) -> Any:
    return freeze(
        {
            "args": json_safe(list(request.args or ())),
            "kwargs": json_safe(dict(request.kwargs or {})),
        }
    )


def _max_retries(task: Any) -> int:
    if task is None:
        return 3
    value = getattr(task, "max_retries", 3)
    return UNLIMITED_RETRIES if value is None else int(value)


def _seconds(value: Any) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return None


def _next_run(when: Any) -> dt.datetime:
    seconds = _seconds(when)
    if seconds is not None:
        return utc_now() + dt.timedelta(seconds=seconds)
    return to_utc(when) or utc_now()


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _describe_schedule(schedule: Any) -> str:
    fields = ("_orig_minute", "_orig_hour", "_orig_day_of_month", "_orig_month_of_year")
    if all(hasattr(schedule, f) for f in (*fields, "_orig_day_of_week")):
        parts = [getattr(schedule, f) for f in (*fields, "_orig_day_of_week")]
        return " ".join(str(p) for p in parts)
    run_every = getattr(schedule, "run_every", None)
    if isinstance(run_every, dt.timedelta):
        return f"every {run_every.total_seconds():g}s"
    return str(schedule)
