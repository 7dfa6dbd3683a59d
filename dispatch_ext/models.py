"""Immutable snapshots handed to hooks: :class:`Job`, :class:`WorkflowRun`, :class:`CronEntry`.

Snapshots are frozen dataclasses. The engine and the bridges deep-freeze their
``payload``/``input``/``output`` with :func:`freeze` (mappings become read-only
``MappingProxyType``, lists become tuples), so an extension cannot change engine state, or
what the next extension sees, through them.
:meth:`Job.to_dict` and friends give plain JSON-ready dictionaries.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType
from typing import Any

__all__ = [
    "CronEntry",
    "Job",
    "JobState",
    "RunState",
    "WorkflowRun",
    "freeze",
    "thaw",
]


class JobState(str, enum.Enum):
    """Where a job is in its life."""

    PENDING = "pending"
    RUNNING = "running"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    DEAD = "dead"

    def __str__(self) -> str:
        return self.value


class RunState(str, enum.Enum):
    """Where a workflow run is in its life."""

    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"

    def __str__(self) -> str:
        return self.value


_SCALARS = (str, int, float, bool, type(None))


def freeze(value: Any) -> Any:
    """Return a deep read-only copy of a JSON-like value (dicts, lists, scalars)."""
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, Mapping):
        return MappingProxyType({k: freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Inverse of :func:`freeze`: plain dicts and lists, ready for ``json.dumps``."""
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    return value


class _Snapshot:
    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        """The snapshot as a plain, JSON-serialisable dict (timestamps in ISO 8601)."""
        return {f.name: thaw(getattr(self, f.name)) for f in fields(self)}  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Job(_Snapshot):
    """A job as it was stored at one state change."""

    id: str
    name: str
    queue: str = "default"
    payload: Any = None
    state: JobState = JobState.PENDING
    priority: int = 0
    max_retries: int = 3
    retry_count: int = 0
    last_error: str | None = None
    run_at: dt.datetime | None = None
    created_at: dt.datetime | None = None
    started_at: dt.datetime | None = None
    completed_at: dt.datetime | None = None
    timeout: float | None = None


@dataclass(frozen=True, slots=True)
class WorkflowRun(_Snapshot):
    """A workflow run as it was stored at one state change."""

    id: str
    name: str
    state: RunState = RunState.RUNNING
    input: Any = None
    output: Any = None
    error: str | None = None
    started_at: dt.datetime | None = None
    completed_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class CronEntry(_Snapshot):
    """A cron entry: what runs, and when it runs next."""

    name: str
    schedule: str
    job_name: str
    payload: Any = None
    next_run_at: dt.datetime | None = None
