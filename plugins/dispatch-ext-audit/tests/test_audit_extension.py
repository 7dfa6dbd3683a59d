"""The audit extension, driven through a real registry."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from dispatch_ext_audit import PATH_ENV, AuditExtension

from dispatch_ext import HOOK_NAMES, CronEntry, Job, JobState, Registry, RunState, WorkflowRun

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup

UTC = dt.timezone.utc
NOW = dt.datetime(2025, 1, 2, 10, 0, 0, tzinfo=UTC)
JOB = Job(id="job-1", name="send_email", queue="mail", retry_count=1, run_at=NOW)
RUN = WorkflowRun(id="run-1", name="onboard", state=RunState.RUNNING)
ENTRY = CronEntry(
    name="nightly", schedule="0 3 * * *", job_name="report", next_run_at=NOW + dt.timedelta(1)
)
CRON_JOB = Job(id="job-2", name="report", queue="reports")
BOOM = ValueError("boom")

# hook -> (kwargs, the fields its line must hold)
CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "on_job_enqueued": (
        {"job": JOB},
        {
            "action": "job.enqueued",
            "resource": "job",
            "id": "job-1",
            "name": "send_email",
            "outcome": "info",
            "severity": "info",
            "reason": None,
            "queue": "mail",
            "retry_count": 1,
            "run_at": NOW.isoformat(),
        },
    ),
    "on_job_started": (
        {"job": JOB},
        {
            "action": "job.started",
            "resource": "job",
            "id": "job-1",
            "outcome": "info",
            "severity": "info",
            "reason": None,
            "queue": "mail",
        },
    ),
    "on_job_completed": (
        {"job": JOB, "elapsed": dt.timedelta(seconds=1.25)},
        {
            "action": "job.completed",
            "resource": "job",
            "id": "job-1",
            "outcome": "success",
            "severity": "info",
            "reason": None,
            "elapsed_seconds": 1.25,
        },
    ),
    "on_job_failed": (
        {"job": JOB, "error": BOOM},
        {
            "action": "job.failed",
            "resource": "job",
            "id": "job-1",
            "outcome": "failure",
            "severity": "error",
            "reason": "boom",
            "error_type": "ValueError",
        },
    ),
    "on_job_retrying": (
        {"job": JOB, "error": BOOM, "attempt": 2, "next_run_at": NOW},
        {
            "action": "job.retrying",
            "resource": "job",
            "id": "job-1",
            "outcome": "retry",
            "severity": "warning",
            "reason": "boom",
            "attempt": 2,
            "next_run_at": "2025-01-02T10:00:00+00:00",
        },
    ),
    "on_job_dlq": (
        {"job": JOB, "error": BOOM},
        {
            "action": "job.dlq",
            "resource": "job",
            "id": "job-1",
            "outcome": "failure",
            "severity": "error",
            "reason": "boom",
        },
    ),
    "on_workflow_started": (
        {"run": RUN},
        {
            "action": "workflow.started",
            "resource": "workflow",
            "id": "run-1",
            "name": "onboard",
            "outcome": "info",
            "severity": "info",
            "reason": None,
        },
    ),
    "on_workflow_step_completed": (
        {"run": RUN, "step": "create_account", "elapsed": dt.timedelta(milliseconds=20)},
        {
            "action": "workflow.step_completed",
            "resource": "workflow",
            "id": "run-1",
            "outcome": "success",
            "severity": "info",
            "step": "create_account",
            "elapsed_seconds": 0.02,
        },
    ),
    "on_workflow_step_failed": (
        {"run": RUN, "step": "send_welcome", "error": BOOM},
        {
            "action": "workflow.step_failed",
            "resource": "workflow",
            "id": "run-1",
            "outcome": "failure",
            "severity": "error",
            "reason": "boom",
            "step": "send_welcome",
        },
    ),
    "on_workflow_completed": (
        {"run": RUN, "elapsed": dt.timedelta(seconds=3)},
        {
            "action": "workflow.completed",
            "resource": "workflow",
            "id": "run-1",
            "outcome": "success",
            "severity": "info",
            "elapsed_seconds": 3.0,
        },
    ),
    "on_workflow_failed": (
        {"run": RUN, "error": BOOM},
        {
            "action": "workflow.failed",
            "resource": "workflow",
            "id": "run-1",
            "outcome": "failure",
            "severity": "error",
            "reason": "boom",
        },
    ),
    "on_cron_fired": (
        {"entry": ENTRY, "job": CRON_JOB},
        {
            "action": "cron.fired",
            "resource": "cron",
            "id": "nightly",
            "name": "nightly",
            "outcome": "info",
            "severity": "info",
            "reason": None,
            "schedule": "0 3 * * *",
            "job_id": "job-2",
            "job_name": "report",
            "queue": "reports",
            "next_run_at": "2025-01-03T10:00:00+00:00",
        },
    ),
    "on_shutdown": (
        {},
        {
            "action": "engine.shutdown",
            "resource": "engine",
            "id": None,
            "name": None,
            "outcome": "info",
            "severity": "info",
            "reason": None,
        },
    ),
}

COMMON_KEYS = {"timestamp", "action", "resource", "id", "name", "outcome", "severity", "reason"}


def read_lines(path: Path) -> list[dict[str, Any]]:
    text = path.read_text(encoding="utf-8")
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


@pytest.fixture
def registry() -> Registry:
    return Registry(strict=True)


def test_cases_cover_every_hook() -> None:
    assert set(CASES) == set(HOOK_NAMES)


def test_registers_all_thirteen_hooks(registry: Registry, tmp_path: Path) -> None:
    name = registry.register(AuditExtension(path=tmp_path / "audit.jsonl"))
    assert name == "audit"
    assert registry.hooks_of("audit") == list(HOOK_NAMES)


@pytest.mark.parametrize("hook", list(CASES))
def test_each_hook_writes_its_line(hook: str, registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    audit = AuditExtension(path=path, flush_interval=3600)
    registry.register(audit)
    kwargs, expected = CASES[hook]

    before = dt.datetime.now(UTC)
    registry.emit(hook, **kwargs)
    audit.close()
    after = dt.datetime.now(UTC)

    [line] = read_lines(path)
    assert set(line) >= COMMON_KEYS
    assert {key: line.get(key) for key in expected} == expected
    stamp = dt.datetime.fromisoformat(line["timestamp"])
    assert stamp.utcoffset() == dt.timedelta(0)
    assert before - dt.timedelta(milliseconds=1) <= stamp <= after + dt.timedelta(milliseconds=1)


def test_a_job_life_is_valid_json_lines_in_order(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    registry.register(AuditExtension(path=path))
    for hook in HOOK_NAMES:
        registry.emit(hook, **CASES[hook][0])

    lines = read_lines(path)  # on_shutdown closed the file: everything is on disk
    assert [line["action"] for line in lines] == [CASES[h][1]["action"] for h in HOOK_NAMES]
    assert all(line["severity"] in {"info", "warning", "error"} for line in lines)
    assert all(line["outcome"] in {"success", "failure", "retry", "info"} for line in lines)


def test_non_ascii_error_text_is_kept(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    registry.register(AuditExtension(path=path))
    error = RuntimeError('échec: 配送失败 — ☃ "quoted"\nsecond line')
    registry.emit("on_job_failed", job=JOB, error=error)
    registry.emit("on_shutdown")

    raw = path.read_bytes().decode("utf-8")
    assert "配送失败" in raw  # written as UTF-8, not \u escapes
    lines = read_lines(path)
    assert len(lines) == 2  # the newline in the message did not split the line
    assert lines[0]["reason"] == str(error)


def test_an_error_with_an_empty_message_gives_its_type(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    registry.register(AuditExtension(path=path))
    registry.emit("on_job_dlq", job=JOB, error=TimeoutError())
    registry.emit("on_shutdown")
    assert read_lines(path)[0]["reason"] == "TimeoutError"


def test_building_it_creates_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(PATH_ENV, raising=False)
    audit = AuditExtension()
    assert list(tmp_path.iterdir()) == []
    assert audit.status_detail == f"writing to {tmp_path.resolve() / 'dispatch-audit.jsonl'}"


def test_default_file_is_in_the_current_directory(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(PATH_ENV, raising=False)
    registry.register(AuditExtension())
    registry.emit("on_job_started", job=JOB)
    registry.emit("on_shutdown")
    assert [line["action"] for line in read_lines(tmp_path / "dispatch-audit.jsonl")] == [
        "job.started",
        "engine.shutdown",
    ]


def test_path_from_environment(
    registry: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "logs" / "from-env.jsonl"
    monkeypatch.setenv(PATH_ENV, str(target))
    registry.register(AuditExtension())
    registry.emit("on_job_started", job=JOB)
    registry.emit("on_shutdown")
    assert len(read_lines(target)) == 2


def test_explicit_path_wins_over_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PATH_ENV, str(tmp_path / "env.jsonl"))
    audit = AuditExtension(path=tmp_path / "explicit.jsonl")
    assert audit.file is not None
    assert audit.file.path == (tmp_path / "explicit.jsonl").resolve()


def test_logger_destination(
    registry: Registry,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(PATH_ENV, raising=False)
    audit = AuditExtension(logger="dispatch.audit.test")
    registry.register(audit)
    assert audit.status_detail == "logging to logger 'dispatch.audit.test'"
    with caplog.at_level(logging.INFO, logger="dispatch.audit.test"):
        registry.emit("on_job_completed", job=JOB, elapsed=dt.timedelta(seconds=1))
        registry.emit("on_job_retrying", job=JOB, error=BOOM, attempt=1, next_run_at=NOW)
        registry.emit("on_job_failed", job=JOB, error=BOOM)
    records = [r for r in caplog.records if r.name == "dispatch.audit.test"]
    assert [r.levelno for r in records] == [logging.INFO, logging.WARNING, logging.ERROR]
    assert [json.loads(r.getMessage())["action"] for r in records] == [
        "job.completed",
        "job.retrying",
        "job.failed",
    ]
    assert list(tmp_path.iterdir()) == []  # a logger alone writes no file


def test_lines_are_buffered_but_none_lost_on_shutdown(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    registry.register(AuditExtension(path=path, flush_interval=3600))
    for _ in range(500):
        registry.emit("on_job_started", job=JOB)
    assert len(path.read_text(encoding="utf-8").splitlines()) < 501  # still buffered
    registry.emit("on_shutdown")
    assert len(read_lines(path)) == 501


def test_flush_interval_zero_writes_every_line_at_once(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    registry.register(AuditExtension(path=path, flush_interval=0))
    for count in range(1, 4):
        registry.emit("on_job_started", job=JOB)
        assert len(read_lines(path)) == count


def test_an_event_after_shutdown_reopens_the_file(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    registry.register(AuditExtension(path=path))
    registry.emit("on_shutdown")
    registry.emit("on_job_enqueued", job=JOB)
    registry.emit("on_shutdown")
    assert [line["action"] for line in read_lines(path)] == [
        "engine.shutdown",
        "job.enqueued",
        "engine.shutdown",
    ]


def test_lines_reach_the_file_at_interpreter_exit(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    script = (
        "from dispatch_ext import Job\n"
        "from dispatch_ext_audit import AuditExtension\n"
        f"audit = AuditExtension(path={str(path)!r}, flush_interval=3600)\n"
        "for i in range(1000):\n"
        "    audit.on_job_started(Job(id=str(i), name='x'))\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert [line["id"] for line in read_lines(path)] == [str(i) for i in range(1000)]


def test_concurrent_writers_never_interleave(registry: Registry, tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    registry.register(AuditExtension(path=path, flush_interval=0.001))
    per_thread = 400

    def work(thread: int) -> None:
        for i in range(per_thread):
            job = Job(id=f"{thread}-{i}", name="x" * 300)
            registry.emit("on_job_started", job=job)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    registry.emit("on_shutdown")

    ids = [line["id"] for line in read_lines(path)][:-1]
    assert sorted(ids) == sorted(f"{t}-{i}" for t in range(8) for i in range(per_thread))


def test_unwritable_path_names_the_file_and_the_fix(registry: Registry, tmp_path: Path) -> None:
    not_a_file = tmp_path / "dir"
    not_a_file.mkdir()
    registry.register(AuditExtension(path=not_a_file))
    with pytest.raises(ExceptionGroup) as caught:  # strict registry: raised after the emit
        registry.emit("on_job_started", job=JOB)
    [error] = caught.value.exceptions
    assert isinstance(error, OSError)
    assert str(not_a_file) in str(error)
    assert "DISPATCH_AUDIT_PATH" in str(error)


def test_negative_flush_interval_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="flush_interval"):
        AuditExtension(path=tmp_path / "a.jsonl", flush_interval=-1)


@pytest.mark.parametrize(
    ("setting", "value", "error", "expected"),
    [
        ("flush_interval", "x", TypeError, "must be a number of seconds (e.g. 1.0), got 'x' (str)"),
        ("flush_interval", True, TypeError, "must be a number of seconds (e.g. 1.0), got True"),
        ("flush_interval", -1, ValueError, "a finite number of seconds >= 0, got -1 (int)"),
        ("flush_interval", float("nan"), ValueError, "a finite number of seconds >= 0"),
        ("path", 3, TypeError, "must be a file path (a string), got 3 (int)"),
        ("path", " ", ValueError, "must be a non-empty file path, got ' ' (str)"),
        ("logger", 5, TypeError, "a logger name (a string) or a Logger, got 5 (int)"),
        ("logger", "", ValueError, "must be a non-empty logger name, got '' (str)"),
        ("name", ["audit"], TypeError, "must be a string, got ['audit'] (list)"),
        ("name", "", ValueError, "must be a non-empty name, got '' (str)"),
    ],
)
def test_a_wrong_setting_is_refused_naming_the_setting_value_and_expected_type(
    tmp_path: Path, setting: str, value: Any, error: type[Exception], expected: str
) -> None:
    settings: dict[str, Any] = {"path": tmp_path / "a.jsonl", setting: value}

    with pytest.raises(error) as caught:
        AuditExtension(**settings)

    assert str(caught.value).startswith(f"audit extension: setting {setting!r} ")
    assert expected in str(caught.value)
    assert list(tmp_path.iterdir()) == []


def test_discovery_marks_the_extension_failed_with_the_settings_message(tmp_path: Path) -> None:
    from dispatch_ext.config import Config
    from dispatch_ext.discovery import discover

    config = Config(enable=("audit",), settings={"audit": {"flush_interval": "x"}})

    [record] = [r for r in discover(config) if r.name == "audit"]

    assert record.status == "failed"
    assert record.error is not None
    assert "TypeError: audit extension: setting 'flush_interval' must be a number of " in (
        record.error
    )
    assert "got 'x' (str)" in record.error
    assert "[extensions.audit]" in record.error


def test_states_in_snapshots_do_not_leak_into_lines(registry: Registry, tmp_path: Path) -> None:
    # The payload is never written: audit lines carry no job data.
    path = tmp_path / "audit.jsonl"
    registry.register(AuditExtension(path=path))
    secret = Job(id="j", name="n", payload={"password": "hunter2"}, state=JobState.COMPLETED)
    registry.emit("on_job_completed", job=secret, elapsed=dt.timedelta(0))
    registry.emit("on_shutdown")
    assert "hunter2" not in path.read_text(encoding="utf-8")


WRITER = """
import sys
from dispatch_ext import Job
from dispatch_ext_audit import AuditExtension

path, worker, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
audit = AuditExtension(path=path, flush_interval=0.001)
for i in range(count):
    audit.on_job_started(Job(id=f"{worker}-{i}", name="x" * 500))
audit.close()
"""


def test_worker_processes_can_share_one_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    count = 2_000
    workers = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(w), str(count)])
        for w in range(4)
    ]
    assert [w.wait(timeout=120) for w in workers] == [0, 0, 0, 0]
    ids = [line["id"] for line in read_lines(path)]  # every line whole, valid JSON
    assert sorted(ids) == sorted(f"{w}-{i}" for w in range(4) for i in range(count))


FORKER = """
import os, sys
from dispatch_ext import Job
from dispatch_ext_audit import AuditExtension

audit = AuditExtension(path=sys.argv[1], flush_interval=3600)
for i in range(10):
    audit.on_job_started(Job(id=f"parent-{i}", name="x"))   # mostly still buffered
pid = os.fork()
if pid == 0:
    audit.on_job_started(Job(id="child", name="x"))
    os._exit(0) if sys.argv[2] == "exit" else sys.exit(0)
os.waitpid(pid, 0)
audit.on_shutdown()
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("how", ["exit", "sys.exit"])
def test_a_forked_child_does_not_repeat_the_parents_lines(tmp_path: Path, how: str) -> None:
    path = tmp_path / "audit.jsonl"
    subprocess.run([sys.executable, "-c", FORKER, str(path), how], check=True, timeout=60)
    ids = [line["id"] for line in read_lines(path)]
    parent = [f"parent-{i}" for i in range(10)]
    # the child's own line is buffered: sys.exit flushes it, os._exit loses it
    child = ["child"] if how == "sys.exit" else []
    assert sorted(ids[:-1]) == sorted(parent + child)
    assert ids[-1] is None  # the parent's engine.shutdown line comes last
