"""The audit lines, byte for byte: what encoding each event's fields as a dict gives.

The extension puts its lines together from JSON fragments; these tests hold it to the
plain construction (one dict per event, encoded with the extension's JSON settings),
for ordinary snapshots and for odd values a bridge or a test might hand over.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from dispatch_ext_audit import AuditExtension
from dispatch_ext_audit import extension as audit_module

from dispatch_ext import HOOK_NAMES, CronEntry, Job, WorkflowRun

UTC = dt.timezone.utc
STAMP = "2025-01-02T10:00:00.000042+00:00"
encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str).encode


def reference(hook: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``hook``'s line, in order, built the plain way."""
    error = kwargs.get("error")
    reason = None if error is None else (str(error) or type(error).__name__)
    error_type = None if error is None else type(error).__qualname__

    def iso(moment: dt.datetime | None) -> str | None:
        return None if moment is None else moment.isoformat()

    def common(
        action: str, resource: str, id: Any, name: Any, outcome: str, severity: str
    ) -> dict[str, Any]:
        return {
            "timestamp": STAMP,
            "action": action,
            "resource": resource,
            "id": id,
            "name": name,
            "outcome": outcome,
            "severity": severity,
            "reason": reason,
        }

    job: Any = kwargs.get("job")
    run: Any = kwargs.get("run")
    elapsed: Any = kwargs.get("elapsed")
    if hook.startswith("on_job_"):
        assert isinstance(job, Job)
        event = hook.removeprefix("on_job_")
        outcome, severity = {
            "enqueued": ("info", "info"),
            "started": ("info", "info"),
            "completed": ("success", "info"),
            "failed": ("failure", "error"),
            "retrying": ("retry", "warning"),
            "dlq": ("failure", "error"),
        }[event]
        line = common(f"job.{event}", "job", job.id, job.name, outcome, severity)
        line["queue"] = job.queue
        line["retry_count"] = job.retry_count
        if event == "enqueued":
            line["run_at"] = iso(job.run_at)
        if event == "completed":
            line["elapsed_seconds"] = elapsed.total_seconds()
        if error is not None:
            line["error_type"] = error_type
        if event == "retrying":
            line["attempt"] = kwargs["attempt"]
            line["next_run_at"] = iso(kwargs["next_run_at"])
        return line
    if hook.startswith("on_workflow_"):
        assert isinstance(run, WorkflowRun)
        event = hook.removeprefix("on_workflow_")
        outcome, severity = {
            "started": ("info", "info"),
            "step_completed": ("success", "info"),
            "step_failed": ("failure", "error"),
            "completed": ("success", "info"),
            "failed": ("failure", "error"),
        }[event]
        line = common(f"workflow.{event}", "workflow", run.id, run.name, outcome, severity)
        if "step" in kwargs:
            line["step"] = kwargs["step"]
        if elapsed is not None:
            line["elapsed_seconds"] = elapsed.total_seconds()
        if error is not None:
            line["error_type"] = error_type
        return line
    if hook == "on_cron_fired":
        entry = kwargs["entry"]
        line = common("cron.fired", "cron", entry.name, entry.name, "info", "info")
        line.update(
            schedule=entry.schedule,
            job_id=job.id,
            job_name=job.name,
            queue=job.queue,
            next_run_at=iso(entry.next_run_at),
        )
        return line
    assert hook == "on_shutdown"
    return common("engine.shutdown", "engine", None, None, "info", "info")


class Color(str, enum.Enum):
    RED = "red"


class Count(enum.IntEnum):
    TWO = 2


class Name(str):
    pass


class Stamp(dt.datetime):
    def isoformat(self, sep: str = "T", timespec: str = "auto") -> str:
        return "custom-" + super().isoformat(sep, timespec)


class Odd:
    def __str__(self) -> str:
        return 'odd "value"\n'


NOW = dt.datetime(2025, 1, 2, 10, 0, 0, 123456, tzinfo=UTC)
PLAIN = Job(id="0123456789abcdef01234567", name="send_email", queue="mail", run_at=NOW)
ODD_JOBS = [
    PLAIN,
    Job(id="j", name="x", run_at=NOW.replace(microsecond=0)),
    Job(id='ü/"\\\t\x00', name='配送 "q"\u2028', queue="☃", retry_count=7, run_at=None),
    Job(id=Odd(), name=Name("sub"), queue=Color.RED, retry_count=Count.TWO),  # type: ignore[arg-type]
    Job(id=12, name=None, queue="q", retry_count=True, run_at=Stamp(2025, 1, 2, tzinfo=UTC)),  # type: ignore[arg-type]
    Job(id="j", name="n", retry_count=2**70, run_at=dt.datetime(2025, 1, 2, 3, 4, 5)),
]
RUN = WorkflowRun(id="run-1", name="onboard")
ODD_RUNS = [RUN, WorkflowRun(id=Odd(), name='名前 "x"')]  # type: ignore[arg-type]
ENTRY = CronEntry(name="nightly", schedule="0 3 * * *", job_name="report", next_run_at=NOW)
ERRORS: list[BaseException] = [
    ValueError("boom"),
    TimeoutError(),
    RuntimeError('échec: "quoted"\nsecond line \x7f'),
    KeyError("k"),
]
ELAPSED = [
    dt.timedelta(seconds=1.25),
    dt.timedelta(0),
    dt.timedelta(microseconds=1),
    dt.timedelta(days=3, seconds=7, microseconds=654321),
    dt.timedelta(days=-1),
]


def cases() -> list[tuple[str, dict[str, Any]]]:
    found: list[tuple[str, dict[str, Any]]] = []
    for job in ODD_JOBS:
        found.append(("on_job_enqueued", {"job": job}))
        found.append(("on_job_started", {"job": job}))
        for elapsed in ELAPSED:
            found.append(("on_job_completed", {"job": job, "elapsed": elapsed}))
        for error in ERRORS:
            found.append(("on_job_failed", {"job": job, "error": error}))
            found.append(("on_job_dlq", {"job": job, "error": error}))
            for attempt in (1, 10**20):
                kwargs = {"job": job, "error": error, "attempt": attempt, "next_run_at": NOW}
                found.append(("on_job_retrying", kwargs))
        found.append(("on_cron_fired", {"entry": ENTRY, "job": job}))
    for run in ODD_RUNS:
        found.append(("on_workflow_started", {"run": run}))
        for elapsed in ELAPSED:
            found.append(("on_workflow_completed", {"run": run, "elapsed": elapsed}))
            step_kwargs = {"run": run, "step": "create_account", "elapsed": elapsed}
            found.append(("on_workflow_step_completed", step_kwargs))
        for error in ERRORS:
            found.append(("on_workflow_failed", {"run": run, "error": error}))
            found.append(("on_workflow_step_failed", {"run": run, "step": "ß", "error": error}))
    found.append(("on_cron_fired", {"entry": CronEntry("c", "* * * * *", "r"), "job": PLAIN}))
    found.append(("on_shutdown", {}))
    return found


CASES = cases()


def test_the_cases_cover_every_hook() -> None:
    assert {hook for hook, _ in CASES} == set(HOOK_NAMES)


@pytest.fixture
def fixed_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(audit_module, "_now", lambda: STAMP)


@pytest.mark.usefixtures("fixed_time")
def test_every_line_is_the_encoded_dict_of_its_fields(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditExtension(path=path, flush_interval=3600)
    for hook, kwargs in CASES:
        getattr(audit, hook)(**kwargs)
    audit.close()

    expected = "".join(encode(reference(hook, kwargs)) + "\n" for hook, kwargs in CASES)
    assert path.read_text(encoding="utf-8") == expected


@pytest.mark.usefixtures("fixed_time")
def test_logged_lines_are_the_same_without_the_newline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    audit = AuditExtension(logger="dispatch.audit.lines")
    with caplog.at_level(logging.INFO, logger="dispatch.audit.lines"):
        for hook, kwargs in CASES:
            getattr(audit, hook)(**kwargs)
    messages = [r.getMessage() for r in caplog.records if r.name == "dispatch.audit.lines"]
    assert messages == [encode(reference(hook, kwargs)) for hook, kwargs in CASES]


@pytest.mark.usefixtures("fixed_time")
def test_a_float_that_is_not_finite_is_written_as_the_encoder_writes_it(tmp_path: Path) -> None:
    class Elapsed:
        def __init__(self, seconds: float) -> None:
            self.seconds = seconds

        def total_seconds(self) -> float:
            return self.seconds

    path = tmp_path / "audit.jsonl"
    audit = AuditExtension(path=path)
    for seconds in (float("nan"), float("inf"), -float("inf"), 1e300, -0.0):
        audit.on_job_completed(PLAIN, Elapsed(seconds))  # type: ignore[arg-type]
    audit.close()

    values = [line.rsplit(":", 1)[1][:-1] for line in path.read_text("utf-8").splitlines()]
    assert values == ["NaN", "Infinity", "-Infinity", "1e+300", "-0.0"]


def test_the_timestamp_is_utc_with_microseconds() -> None:
    before = dt.datetime.now(UTC)
    stamp = dt.datetime.fromisoformat(audit_module._now())
    after = dt.datetime.now(UTC)
    assert stamp.utcoffset() == dt.timedelta(0)
    assert len(audit_module._now()) == len("2025-01-02T10:00:00.000042+00:00")
    assert before - dt.timedelta(milliseconds=1) <= stamp <= after + dt.timedelta(milliseconds=1)
