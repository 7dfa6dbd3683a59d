"""The hook specifications: the 13 lifecycle events an extension can hear.

Each function below is a pluggy hook specification; its docstring is the reference
documentation of the hook. An extension implements a hook by defining a method with the
same name (or one marked with :data:`dispatch_ext.hookimpl`) that accepts any subset of the
hook's arguments, by name. Methods may be ``async def``.

Ordering guarantees within one process: the state change is stored before its hook fires;
:func:`on_job_failed` comes before :func:`on_job_dlq` for the same job; a cron job's
:func:`on_job_enqueued` comes before :func:`on_cron_fired`; each state change produces
exactly one event.
"""

from __future__ import annotations

import datetime as _dt

from .markers import hookspec
from .models import CronEntry, Job, WorkflowRun

__all__ = [
    "HOOK_NAMES",
    "on_cron_fired",
    "on_job_completed",
    "on_job_dlq",
    "on_job_enqueued",
    "on_job_failed",
    "on_job_retrying",
    "on_job_started",
    "on_shutdown",
    "on_workflow_completed",
    "on_workflow_failed",
    "on_workflow_started",
    "on_workflow_step_completed",
    "on_workflow_step_failed",
]


@hookspec
def on_job_enqueued(job: Job) -> None:
    """A job was stored and accepted into its queue.

    Args:
        job: Snapshot of the job as stored, in state ``pending`` (or ``scheduled``).
    """


@hookspec
def on_job_started(job: Job) -> None:
    """A worker claimed the job and is about to run its handler.

    Args:
        job: Snapshot of the job in state ``running``, with ``started_at`` set.
    """


@hookspec
def on_job_completed(job: Job, elapsed: _dt.timedelta) -> None:
    """The handler returned and the completion is stored.

    Args:
        job: Snapshot of the job in state ``completed``.
        elapsed: Time the handler ran, as a ``datetime.timedelta``.
    """


@hookspec
def on_job_failed(job: Job, error: BaseException) -> None:
    """The job failed and no retry remains (terminal).

    Fires before :func:`on_job_dlq` for the same job. A failure with retries left fires
    :func:`on_job_retrying` instead, never this hook.

    Args:
        job: Snapshot of the job in state ``failed``, with ``last_error`` set.
        error: The exception the handler raised (or the timeout error).
    """


@hookspec
def on_job_retrying(
    job: Job, error: BaseException, attempt: int, next_run_at: _dt.datetime
) -> None:
    """The job failed and a retry is scheduled.

    Args:
        job: Snapshot of the job in state ``retrying``.
        error: The exception the handler raised.
        attempt: The number of the retry that is scheduled, 1-based.
        next_run_at: When the retry runs, an aware UTC ``datetime``.
    """


@hookspec
def on_job_dlq(job: Job, error: BaseException) -> None:
    """The job was moved to the dead-letter queue.

    Args:
        job: Snapshot of the job in state ``dead``.
        error: The exception of the last attempt.
    """


@hookspec
def on_workflow_started(run: WorkflowRun) -> None:
    """A workflow run begins.

    Args:
        run: Snapshot of the run in state ``running``.
    """


@hookspec
def on_workflow_step_completed(run: WorkflowRun, step: str, elapsed: _dt.timedelta) -> None:
    """A step finished and its checkpoint is stored.

    A step skipped because an earlier, interrupted run already checkpointed it emits
    nothing.

    Args:
        run: Snapshot of the run.
        step: The step's name.
        elapsed: Time the step ran.
    """


@hookspec
def on_workflow_step_failed(run: WorkflowRun, step: str, error: BaseException) -> None:
    """A step raised.

    Args:
        run: Snapshot of the run.
        step: The step's name.
        error: The exception the step raised.
    """


@hookspec
def on_workflow_completed(run: WorkflowRun, elapsed: _dt.timedelta) -> None:
    """The run finished successfully.

    Args:
        run: Snapshot of the run in state ``completed``, with its ``output``.
        elapsed: Time from the start of the run to its completion.
    """


@hookspec
def on_workflow_failed(run: WorkflowRun, error: BaseException) -> None:
    """The run failed terminally.

    Args:
        run: Snapshot of the run in state ``failed``.
        error: The exception that ended the run.
    """


@hookspec
def on_cron_fired(entry: CronEntry, job: Job) -> None:
    """A cron entry fired and its job was enqueued.

    Fires after the job's :func:`on_job_enqueued`.

    Args:
        entry: Snapshot of the cron entry, ``next_run_at`` already advanced.
        job: Snapshot of the job the entry enqueued.
    """


@hookspec
def on_shutdown() -> None:
    """The engine shuts down gracefully, after its workers drained.

    The last hook an extension hears from an engine: close files, flush buffers here.
    """


HOOK_NAMES: tuple[str, ...] = (
    "on_job_enqueued",
    "on_job_started",
    "on_job_completed",
    "on_job_failed",
    "on_job_retrying",
    "on_job_dlq",
    "on_workflow_started",
    "on_workflow_step_completed",
    "on_workflow_step_failed",
    "on_workflow_completed",
    "on_workflow_failed",
    "on_cron_fired",
    "on_shutdown",
)
"""Every hook name, in the order of the reference."""
