"""What both bridges share: the registry of each process, safe emits, snapshots, timers."""

from __future__ import annotations

import datetime as dt
import logging
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dispatch_ext import Job, JobState, Registry
from dispatch_ext.bridges._common import (
    Once,
    ProcessRegistry,
    Timers,
    from_millis,
    guarded,
    job_snapshot,
    json_safe,
    to_utc,
)
from dispatch_ext.config import Config
from dispatch_ext.testing import Recorder, make_distribution, on_sys_path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bridge_apps import support


def _job(job_id: str = "j1") -> Job:
    return job_snapshot(
        id=job_id, name="send", queue="q", args=[1], kwargs={}, state=JobState.PENDING
    )


class Boom:
    name = "boom"

    def on_job_started(self, job: Job) -> None:
        raise RuntimeError("boom in on_job_started")

    def on_shutdown(self) -> None:
        raise RuntimeError("boom in on_shutdown")


def test_importing_the_bridges_imports_no_job_engine() -> None:
    code = (
        "import sys, dispatch_ext, dispatch_ext.bridges, dispatch_ext.bridges._common\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'celery', 'dramatiq', 'kombu', 'pika', 'redis'}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"


def test_registry_is_built_once_with_the_given_extensions() -> None:
    recorder = Recorder()
    processes = ProcessRegistry(extensions=[recorder], autoload=False)
    assert processes.peek() is None

    registry = processes.get()
    assert processes.get() is registry
    assert processes.peek() is registry
    assert registry.get("recorder") is recorder
    job = _job()
    processes.emit("on_job_enqueued", lambda: {"job": job})
    assert recorder.of("on_job_enqueued")[0]["job"] is job


def test_no_snapshot_is_built_when_nobody_listens() -> None:
    processes = ProcessRegistry(autoload=False)
    built: list[str] = []

    def build() -> dict[str, Any]:
        built.append("job")
        return {"job": _job()}

    processes.emit("on_job_started", build)
    assert built == []


def test_emit_never_raises(caplog: pytest.LogCaptureFixture) -> None:
    recorder = Recorder()
    processes = ProcessRegistry(
        registry=Registry(strict=True), extensions=[Boom(), recorder], autoload=False
    )
    with caplog.at_level(logging.ERROR, logger="dispatch_ext"):
        processes.emit("on_job_started", lambda: {"job": _job()})  # strict: ExceptionGroup
        processes.emit("on_job_completed", lambda: {"job": 1 / 0})  # a broken snapshot
    assert recorder.hooks() == ["on_job_started"]
    assert "emitting on_job_started failed; the task is not affected" in caplog.text
    assert "emitting on_job_completed failed" in caplog.text


def test_shutdown_once_and_only_where_extensions_are_held() -> None:
    recorder = Recorder()
    processes = ProcessRegistry(extensions=[recorder], autoload=False)
    processes.shutdown()  # this process never needed its registry
    assert recorder.hooks() == []

    processes.get()
    processes.shutdown()
    processes.shutdown()
    assert recorder.hooks() == ["on_shutdown"]


def test_a_given_registry_is_used_as_it_is_and_filled_once() -> None:
    registry, recorder = Registry(), Recorder()
    first = ProcessRegistry(registry=registry, extensions=[recorder], autoload=False)
    assert first.get() is registry
    again = ProcessRegistry(registry=registry, extensions=[Boom()], autoload=False)
    assert again.get() is registry
    assert [name for name, _ in registry.extensions()] == ["recorder"]


def _hello_distribution(root: Path, body: str) -> None:
    make_distribution(
        root,
        "dispatch-ext-hello",
        entry_points={"hello": "bridge_hello_ext:Hello"},
        modules={"bridge_hello_ext.py": body},
    )


def test_installed_extensions_are_discovered(tmp_path: Path) -> None:
    _hello_distribution(
        tmp_path,
        """
        class Hello:
            def __init__(self, greeting="hi"):
                self.greeting = greeting

            def on_shutdown(self):
                pass
        """,
    )
    config = Config(enable=("hello",), settings={"hello": {"greeting": "hello"}})
    with on_sys_path(tmp_path):
        registry = ProcessRegistry(config=config).get()
    ext = registry.get("hello")
    assert ext is not None
    assert ext.greeting == "hello"  # type: ignore[attr-defined]


def test_a_discovery_failure_keeps_the_other_extensions(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _hello_distribution(tmp_path, "raise ImportError('no such thing')\n")
    recorder = Recorder()
    config = Config(enable=("hello",), strict=True)
    with on_sys_path(tmp_path), caplog.at_level(logging.ERROR, logger="dispatch_ext"):
        registry = ProcessRegistry(extensions=[recorder], config=config).get()
    assert [name for name, _ in registry.extensions()] == ["recorder"]
    assert "discovering extensions failed" in caplog.text
    assert "hello" in caplog.text


def test_guarded_handlers_log_instead_of_raising(caplog: pytest.LogCaptureFixture) -> None:
    @guarded("celery")
    def on_signal(**kwargs: Any) -> None:
        raise ValueError("bridge bug")

    with caplog.at_level(logging.ERROR, logger="dispatch_ext"):
        on_signal(sender="x")
    assert on_signal.__name__ == "on_signal"
    assert "celery bridge: on_signal failed; the task is not affected" in caplog.text


def test_timers_measure_per_id() -> None:
    timers = Timers()
    started = timers.start("a")
    assert started.tzinfo is dt.timezone.utc
    assert timers.started_at("a") == started
    elapsed, at = timers.stop("a")
    assert at == started
    assert elapsed is not None
    assert elapsed >= dt.timedelta(0)
    assert timers.stop("a") == (None, None)


def test_once_remembers_a_bounded_number_of_keys() -> None:
    once = Once(size=2)
    assert once.first("a")
    assert not once.first("a")
    once.add("b")
    once.add("c")  # "a" is forgotten
    assert once.first("a")
    assert once.pop("c")
    assert not once.pop("c")


def test_snapshots_are_frozen_and_json_safe() -> None:
    job = job_snapshot(
        id="j",
        name="n",
        queue="q",
        args=(1, {"k": [object]}),
        kwargs={"when": dt.datetime(2025, 1, 2, tzinfo=dt.timezone.utc)},
        state=JobState.RUNNING,
        retry_count=2,
    )
    assert job.payload["args"][0] == 1
    with pytest.raises(TypeError):
        job.payload["kwargs"]["when"] = "changed"
    assert job.to_dict()["payload"] == {
        "args": [1, {"k": ["<class 'object'>"]}],
        "kwargs": {"when": "2025-01-02T00:00:00+00:00"},
    }
    assert json_safe({1: (2, 3)}) == {"1": [2, 3]}


def test_time_conversions_give_aware_utc() -> None:
    naive = dt.datetime(2025, 1, 2, 3, 4, 5)
    assert to_utc(naive) == naive.replace(tzinfo=dt.timezone.utc)
    paris = dt.timezone(dt.timedelta(hours=1))
    assert to_utc(dt.datetime(2025, 1, 2, 4, tzinfo=paris)) == dt.datetime(
        2025, 1, 2, 3, tzinfo=dt.timezone.utc
    )
    assert to_utc("2025-01-02T03:04:05+00:00") == naive.replace(tzinfo=dt.timezone.utc)
    assert to_utc("not a date") is None
    assert to_utc(None) is None
    assert from_millis(1_735_787_045_000) == dt.datetime(
        2025, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc
    )
    assert from_millis(None) is None


def test_a_missing_broker_fails_in_ci_and_skips_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setitem(support.BROKER_PORTS, "redis", ("Redis", port))

    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=f"Redis not reachable on 127.0.0.1:{port}"):
        support.require_broker("redis")

    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match=f"^Redis not reachable on 127.0.0.1:{port}$"):
        support.require_broker("redis")
