"""The engine's mutable records, the snapshots built from them, and JSON helpers.

Records are what the engine and its stores pass around; hooks only ever see the frozen
snapshots from :mod:`dispatch_ext.models`, built on demand (only when a hook has a
listener). Times are kept as POSIX seconds (floats) and become aware UTC datetimes in
snapshots.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from dataclasses import dataclass
from typing import Any

from ..models import Job, JobState, RunState, WorkflowRun, freeze
from .errors import PayloadError

__all__ = [
    "DeadLetter",
    "JobRecord",
    "RunRecord",
    "dumps",
    "error_text",
    "error_type",
    "new_id",
    "to_datetime",
]

_UTC = dt.timezone.utc
_dumps = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False).encode


def dumps(value: Any, what: str) -> str:
    """``value`` as compact JSON; :class:`PayloadError` naming ``what`` otherwise."""
    try:
        return _dumps(value)
    except (TypeError, ValueError) as exc:
        raise PayloadError(
            f"{what} is not JSON-serialisable ({exc}); use dicts, lists, strings, numbers, "
            "booleans and None"
        ) from None


_converted: dict[float, dt.datetime] = {}


def to_datetime(seconds: float | None) -> dt.datetime | None:
    """POSIX seconds as an aware UTC datetime (``None`` stays ``None``).

    A job's snapshots repeat its timestamps (``created_at`` is usually its ``run_at``,
    and every later snapshot carries both), so recent conversions are remembered.
    """
    if seconds is None:
        return None
    found = _converted.get(seconds)
    if found is None:
        if len(_converted) >= 4096:
            _converted.clear()
        found = _converted[seconds] = dt.datetime.fromtimestamp(seconds, _UTC)
    return found


_last_ns = 0


def new_id() -> str:
    """A 24-character id that sorts by creation time (16 hex of ns time + 8 random)."""
    global _last_ns
    now = time.time_ns()
    if now <= _last_ns:
        now = _last_ns + 1
    _last_ns = now
    return f"{now:016x}{os.urandom(4).hex()}"


class JobRecord:
    """One job as the engine knows it; the store persists these fields."""

    __slots__ = (
        "_frozen",
        "completed_at",
        "created_at",
        "id",
        "last_error",
        "max_retries",
        "name",
        "payload",
        "priority",
        "queue",
        "retry_count",
        "run_at",
        "seq",
        "started_at",
        "state",
        "timeout",
    )

    def __init__(
        self,
        id: str,
        name: str,
        payload: str,
        *,
        queue: str = "default",
        state: JobState = JobState.PENDING,
        priority: int = 0,
        max_retries: int = 3,
        retry_count: int = 0,
        last_error: str | None = None,
        run_at: float = 0.0,
        created_at: float = 0.0,
        started_at: float | None = None,
        completed_at: float | None = None,
        timeout: float | None = None,
        seq: int = 0,
    ) -> None:
        self.id = id
        self.name = name
        self.payload = payload  # the JSON text
        self.queue = queue
        self.state = state
        self.priority = priority
        self.max_retries = max_retries
        self.retry_count = retry_count
        self.last_error = last_error
        self.run_at = run_at
        self.created_at = created_at
        self.started_at = started_at
        self.completed_at = completed_at
        self.timeout = timeout
        self.seq = seq
        self._frozen: Any = _UNSET

    def frozen_payload(self) -> Any:
        """The payload deep-frozen for snapshots (parsed once, on first use)."""
        value = self._frozen
        if value is _UNSET:
            value = self._frozen = freeze(json.loads(self.payload))
        return value

    def snapshot(self, state: JobState | None = None) -> Job:
        """A frozen :class:`~dispatch_ext.Job` of this record."""
        return Job(
            id=self.id,
            name=self.name,
            queue=self.queue,
            payload=self.frozen_payload(),
            state=self.state if state is None else state,
            priority=self.priority,
            max_retries=self.max_retries,
            retry_count=self.retry_count,
            last_error=self.last_error,
            run_at=to_datetime(self.run_at),
            created_at=to_datetime(self.created_at),
            started_at=to_datetime(self.started_at),
            completed_at=to_datetime(self.completed_at),
            timeout=self.timeout,
        )

    def __repr__(self) -> str:
        return f"<JobRecord {self.name!r} id={self.id} state={self.state.value}>"


_UNSET: Any = object()


@dataclass
class RunRecord:
    """One workflow run as the engine knows it."""

    id: str
    name: str
    input: str
    state: RunState = RunState.RUNNING
    output: str | None = None
    error: str | None = None
    started_at: float = 0.0
    completed_at: float | None = None

    def snapshot(self) -> WorkflowRun:
        """A frozen :class:`~dispatch_ext.WorkflowRun` of this record."""
        return WorkflowRun(
            id=self.id,
            name=self.name,
            state=self.state,
            input=freeze(json.loads(self.input)),
            output=None if self.output is None else freeze(json.loads(self.output)),
            error=self.error,
            started_at=to_datetime(self.started_at),
            completed_at=to_datetime(self.completed_at),
        )


@dataclass(frozen=True)
class DeadLetter:
    """An entry of the dead-letter queue: the job as it died, and why.

    Attributes:
        id: The entry's number (what ``replay`` takes).
        job: Snapshot of the job in state ``dead``.
        error: ``"ExceptionType: message"`` of the last attempt.
        error_type: The exception's qualified class name.
        traceback: The formatted traceback of the last attempt, when there was one.
        failed_at: When the job died (aware UTC).
        replayed_as: The id of the job a replay created, once replayed.
    """

    id: int
    job: Job
    error: str
    error_type: str
    traceback: str | None = None
    failed_at: dt.datetime | None = None
    replayed_as: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The entry as a plain, JSON-serialisable dict."""
        return {
            "id": self.id,
            "job": self.job.to_dict(),
            "error": self.error,
            "error_type": self.error_type,
            "traceback": self.traceback,
            "failed_at": None if self.failed_at is None else self.failed_at.isoformat(),
            "replayed_as": self.replayed_as,
        }


def error_text(error: BaseException) -> str:
    """``"ValueError: boom"`` (just the type name when the message is empty)."""
    message = str(error)
    name = type(error).__name__
    return f"{name}: {message}" if message else name


def error_type(error: BaseException) -> str:
    cls = type(error)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"
