"""One :class:`typing.Protocol` per hook, for type checkers.

Declare the hooks an extension claims, and mypy or pyright checks the signatures::

    class Audit(interfaces.JobCompleted, interfaces.JobFailed):
        def on_job_completed(self, job: Job, elapsed: timedelta) -> None: ...
        def on_job_failed(self, job: Job, error: BaseException) -> None: ...

The return type is ``object`` so that ``async def`` implementations fit as well. At run
time the protocols are ``runtime_checkable``: ``isinstance(ext, JobCompleted)``.
"""

from __future__ import annotations

import datetime as dt
from typing import Protocol, runtime_checkable

from .models import CronEntry, Job, WorkflowRun

__all__ = [
    "CronFired",
    "JobCompleted",
    "JobDLQ",
    "JobEnqueued",
    "JobFailed",
    "JobRetrying",
    "JobStarted",
    "Shutdown",
    "WorkflowCompleted",
    "WorkflowFailed",
    "WorkflowStarted",
    "WorkflowStepCompleted",
    "WorkflowStepFailed",
]


@runtime_checkable
class JobEnqueued(Protocol):
    def on_job_enqueued(self, job: Job) -> object: ...


@runtime_checkable
class JobStarted(Protocol):
    def on_job_started(self, job: Job) -> object: ...


@runtime_checkable
class JobCompleted(Protocol):
    def on_job_completed(self, job: Job, elapsed: dt.timedelta) -> object: ...


@runtime_checkable
class JobFailed(Protocol):
    def on_job_failed(self, job: Job, error: BaseException) -> object: ...


@runtime_checkable
class JobRetrying(Protocol):
    def on_job_retrying(
        self, job: Job, error: BaseException, attempt: int, next_run_at: dt.datetime
    ) -> object: ...


@runtime_checkable
class JobDLQ(Protocol):
    def on_job_dlq(self, job: Job, error: BaseException) -> object: ...


@runtime_checkable
class WorkflowStarted(Protocol):
    def on_workflow_started(self, run: WorkflowRun) -> object: ...


@runtime_checkable
class WorkflowStepCompleted(Protocol):
    def on_workflow_step_completed(
        self, run: WorkflowRun, step: str, elapsed: dt.timedelta
    ) -> object: ...


@runtime_checkable
class WorkflowStepFailed(Protocol):
    def on_workflow_step_failed(
        self, run: WorkflowRun, step: str, error: BaseException
    ) -> object: ...


@runtime_checkable
class WorkflowCompleted(Protocol):
    def on_workflow_completed(self, run: WorkflowRun, elapsed: dt.timedelta) -> object: ...


@runtime_checkable
class WorkflowFailed(Protocol):
    def on_workflow_failed(self, run: WorkflowRun, error: BaseException) -> object: ...


@runtime_checkable
class CronFired(Protocol):
    def on_cron_fired(self, entry: CronEntry, job: Job) -> object: ...


@runtime_checkable
class Shutdown(Protocol):
    def on_shutdown(self) -> object: ...
