"""Attribute sets for measurements, built once per job name and queue and then reused.

OpenTelemetry only reads the attribute mappings it is given, so one dict per distinct
combination serves every measurement with that combination. Names, queues, steps and
exception types come from code, not from data, so the caches stay small; a cache that
grows past :data:`CACHE_LIMIT` entries is emptied rather than grown further.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

Attributes = dict[str, Any]

SYSTEM = "messaging.system"
DESTINATION = "messaging.destination.name"
OPERATION = "messaging.operation.name"
JOB_NAME = "dispatch.job.name"
WORKFLOW_NAME = "dispatch.workflow.name"
STEP = "dispatch.workflow.step"
CRON_ENTRY = "dispatch.cron.entry"
ERROR_TYPE = "error.type"

CACHE_LIMIT = 4096


def error_type(error: object) -> str:
    """The ``error.type`` of an exception: its class, module-qualified unless built in."""
    if not isinstance(error, BaseException):
        return "_OTHER"
    cls = type(error)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def seconds_since(started_at: dt.datetime | None) -> float | None:
    """Seconds from ``started_at`` to now, or ``None`` when the start is unknown."""
    if started_at is None:
        return None
    if started_at.tzinfo is None:
        started_at = started_at.replace(tzinfo=dt.timezone.utc)
    return max(0.0, (dt.datetime.now(dt.timezone.utc) - started_at).total_seconds())


class JobAttributes:
    """The attribute sets of one (job name, queue) pair."""

    __slots__ = ("base", "failures", "processed", "received", "sent")

    def __init__(self, name: str, queue: str, system: str) -> None:
        self.base: Attributes = {DESTINATION: queue, JOB_NAME: name}
        semconv = {SYSTEM: system, **self.base}
        self.sent: Attributes = {**semconv, OPERATION: "send"}
        self.received: Attributes = {**semconv, OPERATION: "receive"}
        self.processed: Attributes = {**semconv, OPERATION: "process"}
        self.failures: dict[str, tuple[Attributes, Attributes]] = {}

    def failure(self, kind: str) -> tuple[Attributes, Attributes]:
        """``(counter attributes, process-duration attributes)`` for an error type."""
        found = self.failures.get(kind)
        if found is None:
            if len(self.failures) >= CACHE_LIMIT:
                self.failures.clear()
            found = ({**self.base, ERROR_TYPE: kind}, {**self.processed, ERROR_TYPE: kind})
            self.failures[kind] = found
        return found


class AttributeCache:
    """Attribute sets keyed by what identifies them."""

    __slots__ = ("_cron", "_jobs", "_steps", "_system", "_workflows")

    def __init__(self, system: str) -> None:
        self._system = system
        self._jobs: dict[tuple[str, str], JobAttributes] = {}
        self._workflows: dict[tuple[str, str | None], Attributes] = {}
        self._steps: dict[tuple[str, str, str | None], Attributes] = {}
        self._cron: dict[tuple[str, str], Attributes] = {}

    def job(self, name: str, queue: str | None) -> JobAttributes:
        key = (name, queue or "default")
        found = self._jobs.get(key)
        if found is None:
            if len(self._jobs) >= CACHE_LIMIT:
                self._jobs.clear()
            found = self._jobs[key] = JobAttributes(str(name), str(key[1]), self._system)
        return found

    def workflow(self, name: str, error: str | None = None) -> Attributes:
        key = (name, error)
        found = self._workflows.get(key)
        if found is None:
            if len(self._workflows) >= CACHE_LIMIT:
                self._workflows.clear()
            found = {WORKFLOW_NAME: str(name)}
            if error is not None:
                found[ERROR_TYPE] = error
            self._workflows[key] = found
        return found

    def step(self, name: str, step: str, error: str | None = None) -> Attributes:
        key = (name, step, error)
        found = self._steps.get(key)
        if found is None:
            if len(self._steps) >= CACHE_LIMIT:
                self._steps.clear()
            found = {WORKFLOW_NAME: str(name), STEP: str(step)}
            if error is not None:
                found[ERROR_TYPE] = error
            self._steps[key] = found
        return found

    def cron(self, entry: str, job_name: str) -> Attributes:
        key = (entry, job_name)
        found = self._cron.get(key)
        if found is None:
            if len(self._cron) >= CACHE_LIMIT:
                self._cron.clear()
            found = self._cron[key] = {CRON_ENTRY: str(entry), JOB_NAME: str(job_name)}
        return found
