"""Job definitions and new job records: the checks behind ``@engine.job`` and ``enqueue``."""

from __future__ import annotations

import datetime as dt
import inspect
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from . import backoff as _backoff
from .records import JobRecord, dumps

__all__ = ["ENQUEUE_OPTIONS", "JobSpec", "make_spec", "new_record"]

ENQUEUE_OPTIONS = ("priority", "delay", "run_at", "queue", "max_retries", "timeout")
"""The keyword options ``enqueue`` takes."""


@dataclass(frozen=True)
class JobSpec:
    """A registered job: its handler and its defaults."""

    name: str
    fn: Callable[..., Any]
    is_async: bool
    queue: str
    max_retries: int
    timeout: float | None
    backoff: _backoff.Backoff


def make_spec(
    name: str,
    fn: Callable[..., Any],
    queue: str,
    max_retries: int,
    timeout: float | None,
    backoff: float | _backoff.Backoff | None,
) -> JobSpec:
    """Check what ``@engine.job`` was given and build the spec."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a job name must be a non-empty string, got {name!r}")
    if not callable(fn):
        raise TypeError(f"job {name!r}: the handler must be callable, got {fn!r}")
    _check_retries(name, max_retries)
    _check_timeout(name, timeout)
    if not isinstance(queue, str) or not queue:
        raise ValueError(f"job {name!r}: queue must be a non-empty string")
    return JobSpec(
        name=name,
        fn=fn,
        is_async=inspect.iscoroutinefunction(fn),
        queue=queue,
        max_retries=max_retries,
        timeout=None if timeout is None else float(timeout),
        backoff=_backoff.resolve(backoff, name),
    )


def new_record(spec: JobSpec, payload: Any, opts: Mapping[str, Any]) -> JobRecord:
    """A new job of ``spec`` (not stored yet: the store gives it its id).

    Raises:
        PayloadError: the payload is not JSON-serialisable.
        TypeError, ValueError: an unknown or malformed option.
    """
    name = spec.name
    text = dumps(payload, f"the payload of job {name!r}")
    now = time.time()
    if not opts:
        return JobRecord(
            "",
            name,
            text,
            queue=spec.queue,
            max_retries=spec.max_retries,
            timeout=spec.timeout,
            run_at=now,
            created_at=now,
        )
    unknown = [key for key in opts if key not in ENQUEUE_OPTIONS]
    if unknown:
        raise TypeError(
            f"enqueue({name!r}): unknown option {unknown[0]!r}; the options are "
            f"{', '.join(ENQUEUE_OPTIONS)}"
        )
    priority = opts.get("priority", 0)
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise TypeError(f"enqueue({name!r}): priority must be an int, got {priority!r}")
    max_retries = opts.get("max_retries", spec.max_retries)
    _check_retries(name, max_retries)
    timeout = opts.get("timeout", spec.timeout)
    _check_timeout(name, timeout)
    queue = opts.get("queue", spec.queue)
    if not isinstance(queue, str) or not queue:
        raise TypeError(f"enqueue({name!r}): queue must be a non-empty string")
    return JobRecord(
        "",
        name,
        text,
        queue=queue,
        priority=priority,
        max_retries=max_retries,
        timeout=None if timeout is None else float(timeout),
        run_at=_run_at(name, now, opts.get("delay"), opts.get("run_at")),
        created_at=now,
    )


def _check_retries(name: str, max_retries: object) -> None:
    if isinstance(max_retries, bool) or not isinstance(max_retries, int) or max_retries < 0:
        raise ValueError(f"job {name!r}: max_retries must be an integer >= 0, got {max_retries!r}")


def _check_timeout(name: str, timeout: object) -> None:
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ValueError(f"job {name!r}: timeout must be seconds > 0 or None, got {timeout!r}")


def _run_at(name: str, now: float, delay: Any, run_at: Any) -> float:
    if delay is not None and run_at is not None:
        raise TypeError(f"enqueue({name!r}): pass delay or run_at, not both")
    if delay is not None:
        if isinstance(delay, dt.timedelta):
            delay = delay.total_seconds()
        if isinstance(delay, bool) or not isinstance(delay, (int, float)) or delay < 0:
            raise ValueError(f"enqueue({name!r}): delay must be seconds >= 0, got {delay!r}")
        return now + float(delay)
    if run_at is not None:
        if not isinstance(run_at, dt.datetime) or run_at.tzinfo is None:
            raise ValueError(
                f"enqueue({name!r}): run_at must be an aware datetime (e.g. with "
                f"tzinfo=datetime.timezone.utc), got {run_at!r}"
            )
        return run_at.timestamp()
    return now
