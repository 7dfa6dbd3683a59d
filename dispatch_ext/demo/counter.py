"""The demo's own extension: it hears all 13 hooks, counts them and keeps each event."""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ..hookspecs import HOOK_NAMES
from ..models import CronEntry, Job, WorkflowRun
from .orders import Expectation

__all__ = ["Event", "EventCounter", "check_expectations"]

_TERMINAL_JOB = {"on_job_completed", "on_job_dlq"}
_TERMINAL_RUN = {"on_workflow_completed", "on_workflow_failed"}


@dataclass(frozen=True)
class Event:
    """One hook call as the counter heard it.

    Attributes:
        hook: The hook's name, e.g. ``on_job_retrying``.
        at: Seconds since the counter was created.
        kind: What it is about: ``job``, ``workflow``, ``cron`` or ``engine``.
        id: The job id, run id or cron entry name (empty for ``on_shutdown``).
        name: The job, workflow or cron entry name.
        payload: The job payload or the run input, as given to the hook.
        detail: What else the hook said, in a few words (attempt, step, error, time).
        failed: Whether the event reports an error.
    """

    hook: str
    at: float
    kind: str
    id: str = ""
    name: str = ""
    payload: Any = None
    detail: str = ""
    failed: bool = False


def _seconds(elapsed: dt.timedelta) -> str:
    seconds = elapsed.total_seconds()
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


class EventCounter:
    """Implements every hook: counts the calls, keeps the events, reports each one.

    Args:
        listener: Called with each :class:`Event` as it happens (the demo prints it).
        name: The name it registers under.
    """

    def __init__(
        self, listener: Callable[[Event], None] | None = None, *, name: str = "demo"
    ) -> None:
        self.name = name
        self.listener = listener
        self.counts: Counter[str] = Counter()
        self.events: list[Event] = []
        self._started = time.monotonic()
        self._lock = threading.Lock()

    def _record(self, event: Event) -> None:
        with self._lock:
            self.counts[event.hook] += 1
            self.events.append(event)
        if self.listener is not None:
            self.listener(event)

    def _now(self) -> float:
        return time.monotonic() - self._started

    def _job(self, hook: str, job: Job, detail: str = "", failed: bool = False) -> None:
        self._record(Event(hook, self._now(), "job", job.id, job.name, job.payload, detail, failed))

    def _run(self, hook: str, run: WorkflowRun, detail: str = "", failed: bool = False) -> None:
        self._record(
            Event(hook, self._now(), "workflow", run.id, run.name, run.input, detail, failed)
        )

    # -- the 13 hooks ---------------------------------------------------------------------

    def on_job_enqueued(self, job: Job) -> None:
        self._job("on_job_enqueued", job)

    def on_job_started(self, job: Job) -> None:
        attempt = job.retry_count + 1
        self._job("on_job_started", job, f"attempt {attempt}" if attempt > 1 else "")

    def on_job_completed(self, job: Job, elapsed: dt.timedelta) -> None:
        self._job("on_job_completed", job, f"in {_seconds(elapsed)}")

    def on_job_failed(self, job: Job, error: BaseException) -> None:
        self._job("on_job_failed", job, _error(error), failed=True)

    def on_job_retrying(
        self, job: Job, error: BaseException, attempt: int, next_run_at: dt.datetime
    ) -> None:
        wait = max(0.0, (next_run_at - dt.datetime.now(dt.timezone.utc)).total_seconds())
        detail = f"retry {attempt} in {wait:.1f} s after {_error(error)}"
        self._job("on_job_retrying", job, detail, failed=True)

    def on_job_dlq(self, job: Job, error: BaseException) -> None:
        self._job(
            "on_job_dlq", job, f"dead-lettered after {job.retry_count + 1} attempts", failed=True
        )

    def on_workflow_started(self, run: WorkflowRun) -> None:
        self._run("on_workflow_started", run)

    def on_workflow_step_completed(
        self, run: WorkflowRun, step: str, elapsed: dt.timedelta
    ) -> None:
        self._run("on_workflow_step_completed", run, f"step {step} in {_seconds(elapsed)}")

    def on_workflow_step_failed(self, run: WorkflowRun, step: str, error: BaseException) -> None:
        self._run("on_workflow_step_failed", run, f"step {step}: {_error(error)}", failed=True)

    def on_workflow_completed(self, run: WorkflowRun, elapsed: dt.timedelta) -> None:
        self._run("on_workflow_completed", run, f"in {_seconds(elapsed)}")

    def on_workflow_failed(self, run: WorkflowRun, error: BaseException) -> None:
        self._run("on_workflow_failed", run, _error(error), failed=True)

    def on_cron_fired(self, entry: CronEntry, job: Job) -> None:
        detail = f"enqueued {job.name} #{job.id[-6:]}"
        self._record(
            Event("on_cron_fired", self._now(), "cron", entry.name, entry.name, None, detail)
        )

    def on_shutdown(self) -> None:
        self._record(Event("on_shutdown", self._now(), "engine", detail="workers drained"))

    # -- reading it back ------------------------------------------------------------------

    def history(self, kind: str, id: str) -> list[Event]:
        """The events of one job (``kind="job"``) or workflow run (``"workflow"``), in the
        order they were heard."""
        with self._lock:
            return [e for e in self.events if e.kind == kind and e.id == id]

    def silent_hooks(self) -> list[str]:
        """The hooks that never fired, in reference order."""
        return [hook for hook in HOOK_NAMES if not self.counts[hook]]


def check_expectations(counter: EventCounter, expected: Iterable[Expectation]) -> list[str]:
    """Compare what the counter heard with how each job and run should end.

    Returns one sentence per mismatch (an empty list when everything ended as expected).
    """
    problems = []
    for exp in expected:
        hooks = [e.hook for e in counter.history(exp.kind, exp.id)]
        terminal = _TERMINAL_JOB if exp.kind == "job" else _TERMINAL_RUN
        ends = [h for h in hooks if h in terminal]
        label = f"{exp.kind} {exp.name} {exp.id[:8]} ({exp.what})"
        if ends != [exp.outcome]:
            heard = ", ".join(h.removeprefix("on_") for h in hooks) or "nothing"
            problems.append(f"{label}: expected {exp.outcome}, heard {heard}")
            continue
        retries = hooks.count("on_job_retrying")
        if retries != exp.retries:
            problems.append(f"{label}: expected {exp.retries} retries, heard {retries}")
        if exp.outcome == "on_job_dlq" and "on_job_failed" not in hooks[: hooks.index(exp.outcome)]:
            problems.append(f"{label}: on_job_dlq came without on_job_failed before it")
    return problems


def compact(payload: Any, width: int = 48) -> str:
    """A payload in a few characters: ``order=A-1001 sku=mug qty=2``."""
    if payload is None:
        return ""
    if isinstance(payload, Mapping):
        text = " ".join(f"{k}={v}" for k, v in payload.items())
    else:
        text = str(payload)
    return text if len(text) <= width else text[: width - 3] + "..."
