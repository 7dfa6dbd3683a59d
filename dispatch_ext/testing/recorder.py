"""A recording extension: implements every hook and keeps each call with its arguments."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .._validation import unknown_hook_message
from ..errors import UnknownHookError
from ..hookspecs import HOOK_NAMES
from ..models import CronEntry, Job, WorkflowRun

__all__ = ["Event", "Recorder"]


@dataclass(frozen=True)
class Event:
    """One hook call a :class:`Recorder` heard.

    ``event["job"]`` is short for ``event.kwargs["job"]``.

    Attributes:
        hook: The hook's name, such as ``"on_job_completed"``.
        kwargs: The arguments the hook was called with, by name (read-only).
    """

    hook: str
    kwargs: Mapping[str, Any]

    def __getitem__(self, argument: str) -> Any:
        return self.kwargs[argument]


class Recorder:
    """An extension that implements all hooks and records every call, in order.

    Register it next to the extension under test (or hand it to an engine) and assert on
    what it heard. Safe to share between threads: engines and bridges emit from worker
    threads, and :meth:`wait_for` lets a test wait for an event that arrives from one.

    Args:
        name: The name it registers under; give two recorders different names.

    Example:
        ```python
        registry.register(recorder)
        registry.emit("on_job_completed", job=job, elapsed=dt.timedelta(seconds=1))
        assert recorder.hooks() == ["on_job_completed"]
        assert recorder.of("on_job_completed")[0]["job"] is job
        ```
    """

    def __init__(self, name: str = "recorder") -> None:
        self.name = name
        self._events: list[Event] = []
        self._changed = threading.Condition()

    # -- what was heard -----------------------------------------------------------------

    @property
    def events(self) -> list[Event]:
        """Every call heard so far, oldest first (a copy)."""
        with self._changed:
            return list(self._events)

    def hooks(self) -> list[str]:
        """The names of the hooks heard so far, oldest first, repeats included."""
        with self._changed:
            return [event.hook for event in self._events]

    def of(self, hook: str) -> list[Event]:
        """The calls of one hook, oldest first.

        Raises:
            UnknownHookError: ``hook`` is not a hook name (the closest one is suggested).
        """
        _check_hook(hook)
        with self._changed:
            return [event for event in self._events if event.hook == hook]

    def clear(self) -> None:
        """Forget everything heard so far."""
        with self._changed:
            self._events.clear()

    def wait_for(self, hook: str, count: int = 1, timeout: float = 10.0) -> list[Event]:
        """Block until ``hook`` was heard at least ``count`` times; return its calls.

        Raises:
            UnknownHookError: ``hook`` is not a hook name.
            AssertionError: Fewer calls arrived within ``timeout`` seconds; the message
                lists what was heard instead.
        """
        _check_hook(hook)
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [event for event in self._events if event.hook == hook]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    heard = ", ".join(event.hook for event in self._events) or "nothing"
                    raise AssertionError(
                        f"recorder {self.name!r} heard {hook} {len(found)} time(s) in "
                        f"{timeout:g} s, expected at least {count}; it heard: {heard}"
                    )
                self._changed.wait(remaining)

    def __len__(self) -> int:
        with self._changed:
            return len(self._events)

    def __iter__(self) -> Iterator[Event]:
        return iter(self.events)

    def __repr__(self) -> str:
        return f"<Recorder {self.name!r}: {len(self)} event(s)>"

    def _record(self, hook: str, **kwargs: Any) -> None:
        event = Event(hook, MappingProxyType(kwargs))
        with self._changed:
            self._events.append(event)
            self._changed.notify_all()

    # -- the hooks ------------------------------------------------------------------------

    def on_job_enqueued(self, job: Job) -> None:
        self._record("on_job_enqueued", job=job)

    def on_job_started(self, job: Job) -> None:
        self._record("on_job_started", job=job)

    def on_job_completed(self, job: Job, elapsed: dt.timedelta) -> None:
        self._record("on_job_completed", job=job, elapsed=elapsed)

    def on_job_failed(self, job: Job, error: BaseException) -> None:
        self._record("on_job_failed", job=job, error=error)

    def on_job_retrying(
        self, job: Job, error: BaseException, attempt: int, next_run_at: dt.datetime
    ) -> None:
        self._record(
            "on_job_retrying", job=job, error=error, attempt=attempt, next_run_at=next_run_at
        )

    def on_job_dlq(self, job: Job, error: BaseException) -> None:
        self._record("on_job_dlq", job=job, error=error)

    def on_workflow_started(self, run: WorkflowRun) -> None:
        self._record("on_workflow_started", run=run)

    def on_workflow_step_completed(
        self, run: WorkflowRun, step: str, elapsed: dt.timedelta
    ) -> None:
        self._record("on_workflow_step_completed", run=run, step=step, elapsed=elapsed)

    def on_workflow_step_failed(self, run: WorkflowRun, step: str, error: BaseException) -> None:
        self._record("on_workflow_step_failed", run=run, step=step, error=error)

    def on_workflow_completed(self, run: WorkflowRun, elapsed: dt.timedelta) -> None:
        self._record("on_workflow_completed", run=run, elapsed=elapsed)

    def on_workflow_failed(self, run: WorkflowRun, error: BaseException) -> None:
        self._record("on_workflow_failed", run=run, error=error)

    def on_cron_fired(self, entry: CronEntry, job: Job) -> None:
        self._record("on_cron_fired", entry=entry, job=job)

    def on_shutdown(self) -> None:
        self._record("on_shutdown")


def _check_hook(hook: str) -> None:
    if hook not in HOOK_NAMES:
        raise UnknownHookError(unknown_hook_message(hook))
