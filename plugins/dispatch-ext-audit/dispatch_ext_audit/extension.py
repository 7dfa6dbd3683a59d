"""The audit extension: one JSON line per lifecycle event."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import time
from json.encoder import encode_basestring

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
_INF = float("inf")
# No payloads are written, so no record can hold a cycle: skip the circularity check.
_encode = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), check_circular=False, default=str
).encode
_encode_str = encode_basestring  # what _encode does with a str (ensure_ascii=False)
_time_ns = time.time_ns
_second: tuple[int, str] = (-1, "")


def _now() -> str:
    """The current time, ISO 8601 in UTC with microseconds; formats once per second."""
    global _second
    seconds, fraction = divmod(_time_ns() // 1000, 1_000_000)
    cached, prefix = _second
    if seconds != cached:
        prefix = dt.datetime.fromtimestamp(seconds, _UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second = (seconds, prefix)
    return "%s.%06d+00:00" % (prefix, fraction)  # noqa: UP031 - faster than an f-string


def _reason(error: BaseException | None) -> str | None:
    if error is None:
        return None
    return str(error) or type(error).__name__


def _error_type(error: BaseException | None) -> str | None:
    return None if error is None else type(error).__qualname__


def _iso(moment: dt.datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


# Lines are put together from JSON fragments instead of encoding a dict per event (a
# quarter of the cost); each fragment is what ``_encode`` writes for its value, so the
# lines are the same, key for key and byte for byte.


def _text(value: object) -> str:
    """``value`` as JSON: a str at once, anything else through ``_encode``."""
    if type(value) is str:
        return _encode_str(value)
    return "null" if value is None else _encode(value)


def _number(value: object) -> str:
    """An int or a finite float as JSON (the encoder's own repr), else via ``_encode``."""
    if type(value) is int:
        return int.__repr__(value)
    if type(value) is float and -_INF < value < _INF:
        return float.__repr__(value)
    return _encode(value)


class _Action:
    """The constant fragments of one action's lines, encoded once."""

    __slots__ = ("head", "level", "middle")

    def __init__(self, action: str, resource: str, outcome: str, severity: str) -> None:
        fixed = _encode({"action": action, "resource": resource})[1:-1]
        # from the quote that closes the timestamp up to the id's value
        self.head = f'",{fixed},"id":'
        # from after the name's value up to the reason's value
        self.middle = "," + _encode({"outcome": outcome, "severity": severity})[1:-1] + ',"reason":'
        self.level = _LEVELS[severity]


_JOB_ENQUEUED = _Action("job.enqueued", "job", "info", "info")
_JOB_STARTED = _Action("job.started", "job", "info", "info")
_JOB_COMPLETED = _Action("job.completed", "job", "success", "info")
_JOB_FAILED = _Action("job.failed", "job", "failure", "error")
_JOB_RETRYING = _Action("job.retrying", "job", "retry", "warning")
_JOB_DLQ = _Action("job.dlq", "job", "failure", "error")
_WORKFLOW_STARTED = _Action("workflow.started", "workflow", "info", "info")
_WORKFLOW_STEP_COMPLETED = _Action("workflow.step_completed", "workflow", "success", "info")
_WORKFLOW_STEP_FAILED = _Action("workflow.step_failed", "workflow", "failure", "error")
_WORKFLOW_COMPLETED = _Action("workflow.completed", "workflow", "success", "info")
_WORKFLOW_FAILED = _Action("workflow.failed", "workflow", "failure", "error")
_CRON_FIRED = _Action("cron.fired", "cron", "info", "info")
_SHUTDOWN = _Action("engine.shutdown", "engine", "info", "info")


def _line(action: _Action, id: object, name: object, reason: str, rest: str = "") -> str:
    """One line: the common fields, then ``rest`` (more ``,"key":value`` fragments)."""
    return (
        f'{{"timestamp":"{_now()}{action.head}{_text(id)},"name":{_text(name)}'
        f"{action.middle}{reason}{rest}}}\n"
    )


def _job_line(action: _Action, job: Job, reason: str = "null", rest: str = "") -> str:
    """A job event's line: the common fields, ``queue``, ``retry_count``, then ``rest``."""
    id, name, queue, retries = job.id, job.name, job.queue, job.retry_count
    if type(id) is str and type(name) is str and type(queue) is str and type(retries) is int:
        # as in every engine snapshot: the same fragments as _text and _number give
        id_json, name_json, queue_json = _encode_str(id), _encode_str(name), _encode_str(queue)
        retries_json = int.__repr__(retries)
    else:
        id_json, name_json, queue_json = _text(id), _text(name), _text(queue)
        retries_json = _number(retries)
    return (
        f'{{"timestamp":"{_now()}{action.head}{id_json},"name":{name_json}{action.middle}'
        f'{reason},"queue":{queue_json},"retry_count":{retries_json}{rest}}}\n'
    )


def _error_fields(error: BaseException) -> tuple[str, str]:
    """``reason`` and the ``error_type`` fragment of an event with an error."""
    return _text(_reason(error)), ',"error_type":' + _text(_error_type(error))


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

    def _write(self, line: str, level: int) -> None:
        """Append ``line`` (ending with a newline) to the file, and log it."""
        if self.file is not None:
            self.file.write(line)
        if self.logger is not None:
            self.logger.log(level, line[:-1])

    # -- jobs ----------------------------------------------------------------------------

    def on_job_enqueued(self, job: Job) -> None:
        rest = ',"run_at":' + _text(_iso(job.run_at))
        self._write(_job_line(_JOB_ENQUEUED, job, rest=rest), _JOB_ENQUEUED.level)

    def on_job_started(self, job: Job) -> None:
        self._write(_job_line(_JOB_STARTED, job), _JOB_STARTED.level)

    def on_job_completed(self, job: Job, elapsed: dt.timedelta) -> None:
        rest = ',"elapsed_seconds":' + _number(elapsed.total_seconds())
        self._write(_job_line(_JOB_COMPLETED, job, rest=rest), _JOB_COMPLETED.level)

    def on_job_failed(self, job: Job, error: BaseException) -> None:
        reason, rest = _error_fields(error)
        self._write(_job_line(_JOB_FAILED, job, reason, rest), _JOB_FAILED.level)

    def on_job_retrying(
        self, job: Job, error: BaseException, attempt: int, next_run_at: dt.datetime
    ) -> None:
        reason, rest = _error_fields(error)
        rest += f',"attempt":{_number(attempt)},"next_run_at":{_text(_iso(next_run_at))}'
        self._write(_job_line(_JOB_RETRYING, job, reason, rest), _JOB_RETRYING.level)

    def on_job_dlq(self, job: Job, error: BaseException) -> None:
        reason, rest = _error_fields(error)
        self._write(_job_line(_JOB_DLQ, job, reason, rest), _JOB_DLQ.level)

    # -- workflows -----------------------------------------------------------------------

    def on_workflow_started(self, run: WorkflowRun) -> None:
        line = _line(_WORKFLOW_STARTED, run.id, run.name, "null")
        self._write(line, _WORKFLOW_STARTED.level)

    def on_workflow_step_completed(
        self, run: WorkflowRun, step: str, elapsed: dt.timedelta
    ) -> None:
        rest = f',"step":{_text(step)},"elapsed_seconds":{_number(elapsed.total_seconds())}'
        line = _line(_WORKFLOW_STEP_COMPLETED, run.id, run.name, "null", rest)
        self._write(line, _WORKFLOW_STEP_COMPLETED.level)

    def on_workflow_step_failed(self, run: WorkflowRun, step: str, error: BaseException) -> None:
        reason, error_type = _error_fields(error)
        rest = f',"step":{_text(step)}{error_type}'
        line = _line(_WORKFLOW_STEP_FAILED, run.id, run.name, reason, rest)
        self._write(line, _WORKFLOW_STEP_FAILED.level)

    def on_workflow_completed(self, run: WorkflowRun, elapsed: dt.timedelta) -> None:
        rest = ',"elapsed_seconds":' + _number(elapsed.total_seconds())
        line = _line(_WORKFLOW_COMPLETED, run.id, run.name, "null", rest)
        self._write(line, _WORKFLOW_COMPLETED.level)

    def on_workflow_failed(self, run: WorkflowRun, error: BaseException) -> None:
        reason, rest = _error_fields(error)
        line = _line(_WORKFLOW_FAILED, run.id, run.name, reason, rest)
        self._write(line, _WORKFLOW_FAILED.level)

    # -- cron and engine -----------------------------------------------------------------

    def on_cron_fired(self, entry: CronEntry, job: Job) -> None:
        rest = (
            f',"schedule":{_text(entry.schedule)},"job_id":{_text(job.id)}'
            f',"job_name":{_text(job.name)},"queue":{_text(job.queue)}'
            f',"next_run_at":{_text(_iso(entry.next_run_at))}'
        )
        self._write(_line(_CRON_FIRED, entry.name, entry.name, "null", rest), _CRON_FIRED.level)

    def on_shutdown(self) -> None:
        self._write(_line(_SHUTDOWN, None, None, "null"), _SHUTDOWN.level)
        if self.file is not None:
            self.file.close()

    def close(self) -> None:
        """Flush and close the audit file (a later event opens it again)."""
        if self.file is not None:
            self.file.close()

    def __repr__(self) -> str:
        return f"AuditExtension({self.status_detail})"
