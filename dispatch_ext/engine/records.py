"""The engine's mutable records, the snapshots built from them, and JSON helpers.

Records are what the engine and its stores pass around; hooks only ever see the frozen
snapshots from :mod:`dispatch_ext.models`, built on demand (only when a hook has a
listener). Times are kept as POSIX seconds (floats) and become aware UTC datetimes in
snapshots.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from json.scanner import make_scanner
from types import MemberDescriptorType
from typing import Any, TypeVar

from ..models import Job, JobState, RunState, WorkflowRun, freeze
from .errors import PayloadError

__all__ = [
    "DeadLetter",
    "JobRecord",
    "RunRecord",
    "dumps",
    "error_text",
    "error_type",
    "fast_constructor",
    "loads",
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


def to_datetime(seconds: float | None) -> dt.datetime | None:
    """POSIX seconds as an aware UTC datetime (``None`` stays ``None``)."""
    return None if seconds is None else dt.datetime.fromtimestamp(seconds, _UTC)


_T = TypeVar("_T")


def fast_constructor(cls: type[_T]) -> Callable[..., _T]:
    """A function building ``cls`` from all its fields, positionally, for snapshots.

    ``cls`` is a frozen dataclass with slots. Its generated ``__init__`` sets every field
    with ``object.__setattr__(self, name, value)``, a lookup by name each time. The
    function made here fills a private, mutable twin of ``cls`` (same bases, same slots:
    the same memory layout) with plain attribute stores, then turns it into a ``cls`` by
    assigning ``__class__``. What it returns is an ordinary ``cls``, frozen from then on
    and equal to ``cls(*values)``, at a third of the cost. Only classes whose ``__init__``
    does nothing else are accepted: every field in ``__init__`` and a slot, no
    ``__post_init__``.
    """
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    if hasattr(cls, "__post_init__") or not all(f.init for f in fields):
        raise TypeError(f"{cls.__qualname__}: its __init__ does more than set fields")
    names = [f.name for f in fields]
    for name in names:
        if not isinstance(cls.__dict__.get(name), MemberDescriptorType):
            raise TypeError(f"{cls.__qualname__}.{name} is not a slot")
    params = ", ".join(names)
    source = (  # field names only: they are identifiers
        f"def __init__(self, {params}):\n"
        + "".join(f"    self.{name} = {name}\n" for name in names)
        + f"def build({params}):\n"
        + f"    self = _draft({params})\n"
        + "    self.__class__ = _cls\n"
        + "    return self\n"
    )
    namespace: dict[str, Any] = {"_cls": cls}
    exec(source, namespace)
    namespace["_draft"] = type(
        f"_{cls.__name__}Draft",
        cls.__bases__,
        {
            "__slots__": cls.__dict__["__slots__"],
            "__init__": namespace["__init__"],
            "__module__": __name__,
        },
    )
    builder: Callable[..., _T] = namespace["build"]
    builder.__name__ = builder.__qualname__ = f"new_{cls.__name__}"
    return builder


_new_job = fast_constructor(Job)
_new_run = fast_constructor(WorkflowRun)
# The scanner json.loads uses, without its whitespace checks (the stub types the context
# as a scanner; any decoder is one).
_scan = make_scanner(json.JSONDecoder())  # type: ignore[arg-type]


def loads(text: str) -> Any:
    """``json.loads(text)``, faster for the compact JSON the engine itself writes."""
    try:
        value, end = _scan(text, 0)
    except StopIteration:  # leading whitespace, or not JSON: let json.loads tell
        return json.loads(text)
    if end != len(text):
        return json.loads(text)
    return value


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
        "_times",
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
        # The times of the last snapshot: run_at, created_at, started_at and completed_at
        # as seconds, then the same as datetimes
        self._times: tuple[Any, ...] | None = None

    def frozen_payload(self) -> Any:
        """The payload deep-frozen for snapshots (parsed once, on first use)."""
        value = self._frozen
        if value is _UNSET:
            value = self._frozen = freeze(loads(self.payload))
        return value

    def snapshot(self, state: JobState | None = None) -> Job:
        """A frozen :class:`~dispatch_ext.Job` of this record.

        Equal to ``Job(id=..., ...)`` field by field, built faster: hooks see one per
        state change. Each time is converted to a datetime once for all the snapshots
        of the record, again only when it changes.
        """
        run_at, created_at = self.run_at, self.created_at
        started_at, completed_at = self.started_at, self.completed_at
        times = self._times
        if (
            times is not None
            and times[0] == run_at
            and times[1] == created_at
            and times[2] == started_at
            and times[3] == completed_at
        ):
            run, created, started, completed = times[4], times[5], times[6], times[7]
        else:  # convert what changed (everything, the first time)
            if times is None:
                times = _NEVER
            run = times[4] if times[0] == run_at else _utc(run_at, _UTC)
            if created_at == run_at:  # as enqueue sets them
                created = run
            else:
                created = times[5] if times[1] == created_at else _utc(created_at, _UTC)
            if times[2] == started_at:
                started = times[6]
            else:
                started = None if started_at is None else _utc(started_at, _UTC)
            if times[3] == completed_at:
                completed = times[7]
            else:
                completed = None if completed_at is None else _utc(completed_at, _UTC)
            self._times = (
                run_at,
                created_at,
                started_at,
                completed_at,
                run,
                created,
                started,
                completed,
            )
        payload = self._frozen
        return _new_job(
            self.id,
            self.name,
            self.queue,
            self.frozen_payload() if payload is _UNSET else payload,
            self.state if state is None else state,
            self.priority,
            self.max_retries,
            self.retry_count,
            self.last_error,
            run,
            created,
            started,
            completed,
            self.timeout,
        )

    def __repr__(self) -> str:
        return f"<JobRecord {self.name!r} id={self.id} state={self.state.value}>"


_UNSET: Any = object()
_utc = dt.datetime.fromtimestamp
# No time equals NaN, not even None: every time is converted.
_NEVER: tuple[Any, ...] = (math.nan,) * 4 + (None,) * 4


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
        return _new_run(
            self.id,
            self.name,
            self.state,
            freeze(loads(self.input)),
            None if self.output is None else freeze(loads(self.output)),
            self.error,
            to_datetime(self.started_at),
            to_datetime(self.completed_at),
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
