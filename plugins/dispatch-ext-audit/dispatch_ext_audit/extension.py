"""The audit extension: one JSON line per lifecycle event."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from typing import Any

from dispatch_ext import CronEntry, Job, WorkflowRun

from ._settings import check_settings
from ._sink import JsonLinesFile

__all__ = ["DEFAULT_PATH", "PATH_ENV", "AuditExtension"]

DEFAULT_PATH = "dispatch-audit.jsonl"
"""The file written when neither ``path``, ``logger`` nor :data:`PATH_ENV` is given."""

PATH_ENV = "DISPATCH_AUDIT_PATH"
"""Environment variable naming the audit file when ``path`` is not given."""

_LEVELS = {"info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_UTC = dt.timezone.utc
# No payloads are written, so no record can hold a cycle: skip the circularity check.
_encode = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), check_circular=False, default=str
).encode
_second: tuple[int, str] = (-1, "")


def _now() -> str:
    """The current time, ISO 8601 in UTC with microseconds; formats once per second."""
    global _second
    micros = time.time_ns() // 1000
    seconds, fraction = divmod(micros, 1_000_000)
    cached, prefix = _second
    if seconds != cached:
        prefix = dt.datetime.fromtimestamp(seconds, _UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second = (seconds, prefix)
    return f"{prefix}.{fraction:06d}+00:00"


def _reason(error: BaseException | None) -> str | None:
    if error is None:
        return None
    return str(error) or type(error).__name__


def _error_type(error: BaseException | None) -> str | None:
    return None if error is None else type(error).__qualname__


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


class AuditExtension:
    """Writes one JSON line per job, workflow, cron and shutdown event.

    Every line holds ``timestamp`` (ISO 8601, UTC), ``action`` (``job.completed``,
    ``workflow.step_failed``, ``cron.fired``, ``engine.shutdown``, ...), ``resource``
    (``job``, ``workflow``, ``cron`` or ``engine``), ``id``, ``name``, ``outcome``
    (``success``, ``failure``, ``retry`` or ``info``), ``severity`` (``info``, ``warning``
    or ``error``) and ``reason`` (the error text, or ``null``), plus fields that belong to
    the event: ``queue``, ``retry_count``, ``attempt``, ``next_run_at``,
    ``elapsed_seconds``, ``step``, ``error_type``.

    Args:
        path: The JSON-lines file to append to. Defaults to ``$DISPATCH_AUDIT_PATH``, else
            ``dispatch-audit.jsonl`` in the current directory, unless ``logger`` is given.
        logger: A :class:`logging.Logger` or a logger name; each line is also logged
            there, at the level of its severity.
        flush_interval: Seconds between flushes of the file buffer (a flush happens on a
            write that finds the last one older). ``0`` flushes every line. Every line is
            flushed on ``on_shutdown`` and at interpreter exit.
        name: The name the extension registers under.

    Raises:
        TypeError: A setting has the wrong type (``flush_interval = "x"``); the message
            names the setting, the value given and the type expected.
        ValueError: A setting is out of range (``flush_interval = -1``); the message
            names the setting, the value given and what is expected.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None = None,
        logger: logging.Logger | str | None = None,
        *,
        flush_interval: float = 1.0,
        name: str = "audit",
    ) -> None:
        check_settings(path, logger, flush_interval, name)
        self.name = name
        if isinstance(logger, str):
            logger = logging.getLogger(logger)
        self.logger: logging.Logger | None = logger
        if path is None:
            path = os.environ.get(PATH_ENV) or (None if logger is not None else DEFAULT_PATH)
        self.file: JsonLinesFile | None = (
            None if path is None else JsonLinesFile(path, flush_interval=flush_interval)
        )

    @property
    def status_detail(self) -> str:
        """Where the audit lines go."""
        places = []
        if self.file is not None:
            places.append(f"writing to {self.file.path}")
        if self.logger is not None:
            places.append(f"logging to logger {self.logger.name!r}")
        return " and ".join(places)

    def _write(self, record: dict[str, Any]) -> None:
        line = _encode(record)
        if self.file is not None:
            self.file.write(line + "\n")
        if self.logger is not None:
            self.logger.log(_LEVELS[record["severity"]], line)

    def _job(
        self,
        action: str,
        job: Job,
        outcome: str,
        severity: str,
        error: BaseException | None = None,
    ) -> dict[str, Any]:
        return {
            "timestamp": _now(),
            "action": action,
            "resource": "job",
            "id": job.id,
            "name": job.name,
            "outcome": outcome,
            "severity": severity,
            "reason": _reason(error),
            "queue": job.queue,
            "retry_count": job.retry_count,
        }

    def _run(
        self,
        action: str,
        run: WorkflowRun,
        outcome: str,
        severity: str,
        error: BaseException | None = None,
    ) -> dict[str, Any]:
        return {
            "timestamp": _now(),
            "action": action,
            "resource": "workflow",
            "id": run.id,
            "name": run.name,
            "outcome": outcome,
            "severity": severity,
            "reason": _reason(error),
        }

    # -- jobs ----------------------------------------------------------------------------

    def on_job_enqueued(self, job: Job) -> None:
        record = self._job("job.enqueued", job, "info", "info")
        record["run_at"] = _iso(job.run_at)
        self._write(record)

    def on_job_started(self, job: Job) -> None:
        self._write(self._job("job.started", job, "info", "info"))

    def on_job_completed(self, job: Job, elapsed: dt.timedelta) -> None:
        record = self._job("job.completed", job, "success", "info")
        record["elapsed_seconds"] = elapsed.total_seconds()
        self._write(record)

    def on_job_failed(self, job: Job, error: BaseException) -> None:
        record = self._job("job.failed", job, "failure", "error", error)
        record["error_type"] = _error_type(error)
        self._write(record)

    def on_job_retrying(
        self, job: Job, error: BaseException, attempt: int, next_run_at: dt.datetime
    ) -> None:
        record = self._job("job.retrying", job, "retry", "warning", error)
        record["error_type"] = _error_type(error)
        record["attempt"] = attempt
        record["next_run_at"] = _iso(next_run_at)
        self._write(record)

    def on_job_dlq(self, job: Job, error: BaseException) -> None:
        record = self._job("job.dlq", job, "failure", "error", error)
        record["error_type"] = _error_type(error)
        self._write(record)

    # -- workflows -----------------------------------------------------------------------

    def on_workflow_started(self, run: WorkflowRun) -> None:
        self._write(self._run("workflow.started", run, "info", "info"))

    def on_workflow_step_completed(
        self, run: WorkflowRun, step: str, elapsed: dt.timedelta
    ) -> None:
        record = self._run("workflow.step_completed", run, "success", "info")
        record["step"] = step
        record["elapsed_seconds"] = elapsed.total_seconds()
        self._write(record)

    def on_workflow_step_failed(self, run: WorkflowRun, step: str, error: BaseException) -> None:
        record = self._run("workflow.step_failed", run, "failure", "error", error)
        record["step"] = step
        record["error_type"] = _error_type(error)
        self._write(record)

    def on_workflow_completed(self, run: WorkflowRun, elapsed: dt.timedelta) -> None:
        record = self._run("workflow.completed", run, "success", "info")
        record["elapsed_seconds"] = elapsed.total_seconds()
        self._write(record)

    def on_workflow_failed(self, run: WorkflowRun, error: BaseException) -> None:
        record = self._run("workflow.failed", run, "failure", "error", error)
        record["error_type"] = _error_type(error)
        self._write(record)

    # -- cron and engine -----------------------------------------------------------------

    def on_cron_fired(self, entry: CronEntry, job: Job) -> None:
        self._write(
            {
                "timestamp": _now(),
                "action": "cron.fired",
                "resource": "cron",
                "id": entry.name,
                "name": entry.name,
                "outcome": "info",
                "severity": "info",
                "reason": None,
                "schedule": entry.schedule,
                "job_id": job.id,
                "job_name": job.name,
                "queue": job.queue,
                "next_run_at": _iso(entry.next_run_at),
            }
        )

    def on_shutdown(self) -> None:
        self._write(
            {
                "timestamp": _now(),
                "action": "engine.shutdown",
                "resource": "engine",
                "id": None,
                "name": None,
                "outcome": "info",
                "severity": "info",
                "reason": None,
            }
        )
        if self.file is not None:
            self.file.close()

    def close(self) -> None:
        """Flush and close the audit file (a later event opens it again)."""
        if self.file is not None:
            self.file.close()

    def __repr__(self) -> str:
        return f"AuditExtension({self.status_detail})"
