"""Hooks on the embedded engine: every hook fires, in order, and no extension can hurt a job."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import sys
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from dispatch_ext import HOOK_NAMES, CronEntry, Job, JobState, WorkflowRun
from dispatch_ext.config import Config
from dispatch_ext.engine import (
    CronScheduleError,
    Engine,
    PayloadError,
    SQLiteStore,
    UnknownJobError,
    WorkflowContext,
)
from dispatch_ext.testing.distributions import make_distribution, on_sys_path

NO_CONFIG = Config(autoload=False)


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


class Everything:
    """Listens on all 13 hooks and keeps (hook, arguments) in order."""

    name = "everything"

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def _add(self, hook: str, **kwargs: Any) -> None:
        with self.lock:
            self.calls.append((hook, kwargs))

    def hooks(self) -> list[str]:
        return [hook for hook, _ in self.calls]

    def on_job_enqueued(self, job: Job) -> None:
        self._add("on_job_enqueued", job=job)

    def on_job_started(self, job: Job) -> None:
        self._add("on_job_started", job=job)

    def on_job_completed(self, job: Job, elapsed: dt.timedelta) -> None:
        self._add("on_job_completed", job=job, elapsed=elapsed)

    def on_job_failed(self, job: Job, error: BaseException) -> None:
        self._add("on_job_failed", job=job, error=error)

    def on_job_retrying(
        self, job: Job, error: BaseException, attempt: int, next_run_at: dt.datetime
    ) -> None:
        self._add("on_job_retrying", job=job, attempt=attempt, next_run_at=next_run_at)

    def on_job_dlq(self, job: Job, error: BaseException) -> None:
        self._add("on_job_dlq", job=job, error=error)

    def on_workflow_started(self, run: WorkflowRun) -> None:
        self._add("on_workflow_started", run=run)

    def on_workflow_step_completed(
        self, run: WorkflowRun, step: str, elapsed: dt.timedelta
    ) -> None:
        self._add("on_workflow_step_completed", run=run, step=step)

    def on_workflow_step_failed(self, run: WorkflowRun, step: str, error: BaseException) -> None:
        self._add("on_workflow_step_failed", run=run, step=step)

    def on_workflow_completed(self, run: WorkflowRun, elapsed: dt.timedelta) -> None:
        self._add("on_workflow_completed", run=run, elapsed=elapsed)

    def on_workflow_failed(self, run: WorkflowRun, error: BaseException) -> None:
        self._add("on_workflow_failed", run=run, error=error)

    def on_cron_fired(self, entry: CronEntry, job: Job) -> None:
        self._add("on_cron_fired", entry=entry, job=job)

    def on_shutdown(self) -> None:
        self._add("on_shutdown")


def build(tmp_path: Path, *extensions: object, **kwargs: Any) -> Engine:
    kwargs.setdefault("config", NO_CONFIG)
    return Engine(
        store=SQLiteStore(tmp_path / "hooks.sqlite3"),
        extensions=extensions,
        autoload=False,
        **kwargs,
    )


def add_jobs(engine: Engine) -> None:
    state = {"flaky": 0}

    @engine.job("ok")
    def ok(payload: Any) -> None:
        pass

    @engine.job("flaky", max_retries=3, backoff=0.01)
    def flaky(payload: Any) -> None:
        state["flaky"] += 1
        if state["flaky"] < 2:
            raise RuntimeError("once")

    @engine.job("doomed", max_retries=0)
    async def doomed(payload: Any) -> None:
        raise ValueError("doomed")


async def wait_for(predicate: Any, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_every_hook_fires_in_one_run(tmp_path: Path) -> None:
    everything = Everything()
    engine = build(tmp_path, everything)
    add_jobs(engine)

    @engine.workflow("two-steps")
    async def two_steps(wf: WorkflowContext, payload: Any) -> int:
        return int(await wf.step("a", lambda: 1)) + int(await wf.step("b", lambda: 2))

    @engine.workflow("broken")
    async def broken(wf: WorkflowContext, payload: Any) -> None:
        await wf.step("fails", lambda: 1 / 0)

    engine.cron("tick", "* * * * * *", "ok", {"from": "cron"})

    async def main() -> None:
        async with engine:
            await engine.enqueue("ok")
            await engine.enqueue("flaky")
            await engine.enqueue("doomed")
            await engine.start_workflow("two-steps")
            await engine.start_workflow("broken")
            await wait_for(lambda: "on_cron_fired" in everything.hooks(), timeout=5)
            await engine.drain(timeout=10)

    run(main())
    heard = everything.hooks()
    assert set(heard) == set(HOOK_NAMES)
    assert heard.count("on_shutdown") == 1
    assert heard[-1] == "on_shutdown"


def test_cron_with_seconds_fires_and_enqueues_before_firing(tmp_path: Path) -> None:
    everything = Everything()
    engine = build(tmp_path, everything)
    ran: list[Any] = []

    @engine.job("beat")
    def beat(payload: Any) -> None:
        ran.append(payload)

    entry = engine.cron("heartbeat", "* * * * * *", beat, {"n": 1})
    assert entry.schedule == "* * * * * *"
    assert entry.job_name == "beat"

    async def main() -> None:
        async with engine:
            await wait_for(lambda: everything.hooks().count("on_cron_fired") >= 2, timeout=6)
            await engine.drain(timeout=10)

    run(main())
    fired = [kwargs for hook, kwargs in everything.calls if hook == "on_cron_fired"]
    enqueued_ids = [kw["job"].id for hook, kw in everything.calls if hook == "on_job_enqueued"]

    def position(hook: str, job_id: str) -> int:
        return next(
            i
            for i, (heard, kwargs) in enumerate(everything.calls)
            if heard == hook and kwargs["job"].id == job_id
        )

    for event in fired:
        job = event["job"]
        assert job.name == "beat"
        assert position("on_job_enqueued", job.id) < position("on_cron_fired", job.id)
        entry_snapshot = event["entry"]
        assert entry_snapshot.name == "heartbeat"
        assert entry_snapshot.next_run_at > job.created_at  # already advanced
        assert entry_snapshot.next_run_at.utcoffset() == dt.timedelta(0)
    assert len(set(enqueued_ids)) == len(enqueued_ids)
    assert len(ran) >= 2
    assert ran[0] == {"n": 1}
    # Fires are a second apart (whole seconds of the schedule).
    times = [event["job"].created_at for event in fired]
    assert all((b - a) >= dt.timedelta(seconds=0.5) for a, b in itertools.pairwise(times))


@pytest.mark.parametrize(
    ("schedule", "field"),
    [
        ("61 * * * *", "minute"),
        ("* 24 * * *", "hour"),
        ("* * 32 * *", "day of month"),
        ("* * * 13 *", "month"),
        ("* * * * funday", "day of week"),
        ("75 * * * * *", "second"),
        ("*/5 * * * * 9", "day of week"),
    ],
)
def test_malformed_cron_names_entry_and_field(tmp_path: Path, schedule: str, field: str) -> None:
    engine = build(tmp_path)

    @engine.job("j")
    def j(payload: Any) -> None:
        pass

    with pytest.raises(CronScheduleError) as info:
        engine.cron("nightly-report", schedule, "j")
    message = str(info.value)
    assert "'nightly-report'" in message
    assert f"the {field} field" in message


@pytest.mark.parametrize(
    ("shortcut", "after", "fires"),
    [
        ("@hourly", "2024-05-06 10:20:30", "2024-05-06 11:00:00"),
        ("@daily", "2024-05-06 10:20:30", "2024-05-07 00:00:00"),
        ("@midnight", "2024-05-06 10:20:30", "2024-05-07 00:00:00"),
        ("@weekly", "2024-05-06 10:20:30", "2024-05-12 00:00:00"),  # a Sunday
        ("@monthly", "2024-05-06 10:20:30", "2024-06-01 00:00:00"),
        ("@yearly", "2024-05-06 10:20:30", "2025-01-01 00:00:00"),
        ("@annually", "2024-05-06 10:20:30", "2025-01-01 00:00:00"),
        (" @Hourly ", "2024-05-06 10:20:30", "2024-05-06 11:00:00"),
    ],
)
def test_cron_shortcuts(tmp_path: Path, shortcut: str, after: str, fires: str) -> None:
    from dispatch_ext.engine.cron import parse_schedule

    engine = build(tmp_path)

    @engine.job("report")
    def report(payload: Any) -> None:
        pass

    entry = engine.cron("report", shortcut, "report")
    assert entry.schedule == shortcut.strip().lower()
    utc = dt.timezone.utc
    start = dt.datetime.fromisoformat(after).replace(tzinfo=utc).timestamp()
    expected = dt.datetime.fromisoformat(fires).replace(tzinfo=utc).timestamp()
    assert parse_schedule("report", shortcut).next_after(start) == expected


def test_six_field_schedules_put_the_seconds_first() -> None:
    from dispatch_ext.engine.cron import parse_schedule

    start = dt.datetime(2024, 5, 6, 10, 20, 30, tzinfo=dt.timezone.utc).timestamp()
    # "15 * * * * *": second 15 of every minute (croniter's default would read the last
    # field as seconds).
    fire = parse_schedule("s", "15 * * * * *").next_after(start)
    assert dt.datetime.fromtimestamp(fire, dt.timezone.utc) == dt.datetime(
        2024, 5, 6, 10, 21, 15, tzinfo=dt.timezone.utc
    )


def test_cron_refusals(tmp_path: Path) -> None:
    engine = build(tmp_path)

    @engine.job("report")
    def report(payload: Any) -> None:
        pass

    with pytest.raises(CronScheduleError, match=r"'short'.*4 field") as info:
        engine.cron("short", "* * * *", "report")
    assert "a shortcut such as @hourly" in str(info.value)
    assert "6 with the seconds field first" in str(info.value)
    with pytest.raises(CronScheduleError) as info:
        engine.cron("often", "@fortnightly", "report")
    assert str(info.value) == (
        "cron entry 'often': unknown shortcut '@fortnightly'; the shortcuts are @yearly, "
        "@annually, @monthly, @weekly, @daily, @midnight, @hourly"
    )
    with pytest.raises(PayloadError, match=r"'nightly'.*JSON"):
        engine.cron("nightly", "0 3 * * *", "report", {"when": object()})
    engine.cron("typo", "0 3 * * *", "reprot")
    with pytest.raises(UnknownJobError, match=r"cron entry 'typo'.*did you mean 'report'"):
        run(engine.start())


@pytest.mark.slow
def test_slow_and_raising_extensions_leave_every_job_in_its_right_state(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class Slow:
        name = "slow"

        def on_job_enqueued(self, job: Job) -> None:
            time.sleep(2)

    class Raising:
        name = "raising"

        def on_job_failed(self, job: Job, error: BaseException) -> None:
            raise RuntimeError("the extension is broken")

        def on_job_completed(self, job: Job) -> None:
            raise RuntimeError("also broken")

    everything = Everything()
    engine = build(tmp_path, Slow(), Raising(), everything)
    add_jobs(engine)

    async def main() -> dict[str, Job | None]:
        async with engine:
            jobs = [await engine.enqueue(name) for name in ("ok", "flaky", "doomed")]
            await engine.drain(timeout=30)
            assert await engine.counts() == {
                "pending": 0,
                "running": 0,
                "retrying": 0,
                "completed": 2,
                "failed": 0,
                "dead": 1,
            }
            assert len(await engine.dlq.list()) == 1
            return {job.name: await engine.get_job(job.id) for job in jobs}

    with caplog.at_level(logging.ERROR, logger="dispatch_ext"):
        final = run(main())
    assert {name: job.state for name, job in final.items() if job} == {
        "ok": JobState.COMPLETED,
        "flaky": JobState.COMPLETED,
        "doomed": JobState.DEAD,
    }
    assert "the extension is broken" in caplog.text
    # The other extensions still heard everything, in order.
    doomed = [hook for hook, kw in everything.calls if kw.get("job") and kw["job"].name == "doomed"]
    assert doomed == ["on_job_enqueued", "on_job_started", "on_job_failed", "on_job_dlq"]


def test_strict_registry_errors_do_not_break_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DISPATCH_EXT_STRICT", "1")

    class Raising:
        name = "raising"

        def on_job_started(self, job: Job) -> None:
            raise RuntimeError("strict boom")

        async def on_job_completed(self, job: Job) -> None:
            raise RuntimeError("async strict boom")

        def on_shutdown(self) -> None:
            raise RuntimeError("shutdown boom")

    engine = build(tmp_path, Raising())
    assert engine.registry.strict
    add_jobs(engine)

    async def main() -> dict[str, int]:
        async with engine:
            for _ in range(5):
                await engine.enqueue("ok")
            await engine.drain(timeout=10)
            return await engine.counts()

    with caplog.at_level(logging.ERROR, logger="dispatch_ext"):
        counts = run(main())
    assert counts["completed"] == 5
    assert "strict boom" in caplog.text
    assert "shutdown boom" in caplog.text


def test_hanging_async_hook_is_cut_off_by_its_timeout(tmp_path: Path) -> None:
    class Hangs:
        name = "hangs"
        hook_timeout = 0.1

        async def on_job_started(self, job: Job) -> None:
            await asyncio.sleep(30)

    engine = build(tmp_path, Hangs())
    add_jobs(engine)

    async def main() -> dict[str, int]:
        async with engine:
            await engine.enqueue("ok")
            await engine.drain(timeout=10)
            return await engine.counts()

    assert run(main())["completed"] == 1
    stats = engine.registry.stats()["hangs"]["on_job_started"]
    assert stats.timeouts == 1


def test_graceful_shutdown_waits_for_running_jobs_then_emits_on_shutdown_last(
    tmp_path: Path,
) -> None:
    everything = Everything()
    engine = build(tmp_path, everything)
    finished: list[str] = []

    @engine.job("sync-slow")
    def sync_slow(payload: Any) -> None:
        time.sleep(0.4)
        finished.append("sync")

    @engine.job("async-slow")
    async def async_slow(payload: Any) -> None:
        await asyncio.sleep(0.4)
        finished.append("async")

    async def main() -> None:
        async with engine:
            await engine.enqueue("sync-slow")
            await engine.enqueue("async-slow")
            await wait_for(lambda: everything.hooks().count("on_job_started") == 2)
        # Leaving the block shut down gracefully: both jobs finished first.

    run(main())
    assert sorted(finished) == ["async", "sync"]
    hooks = everything.hooks()
    assert hooks.count("on_shutdown") == 1
    assert hooks[-1] == "on_shutdown"
    assert hooks.count("on_job_completed") == 2

    async def check() -> dict[str, int]:
        counts = await engine.counts()
        await engine.stop()
        return counts

    assert run(check())["completed"] == 2


def test_shutdown_timeout_puts_unfinished_jobs_back(tmp_path: Path) -> None:
    everything = Everything()
    engine = build(tmp_path, everything)
    release = threading.Event()

    @engine.job("stuck")
    def stuck(payload: Any) -> None:
        release.wait(10)

    @engine.job("waiting")
    def waiting(payload: Any) -> None:
        pass

    async def main() -> float:
        await engine.start()
        await engine.enqueue("stuck")
        await wait_for(lambda: "on_job_started" in everything.hooks())
        began = time.monotonic()
        await engine.stop(timeout=0.3)
        return time.monotonic() - began

    took = run(main())
    release.set()
    assert took < 5
    assert everything.hooks()[-1] == "on_shutdown"
    assert "on_job_completed" not in everything.hooks()

    again = build(tmp_path)  # a new engine on the same file runs it again

    @again.job("stuck")
    def stuck_again(payload: Any) -> None:
        pass

    async def rerun() -> dict[str, int]:
        async with again:
            await again.drain(timeout=10)
            return await again.counts()

    assert run(rerun())["completed"] == 1


def test_extensions_are_discovered_when_the_engine_starts(tmp_path: Path) -> None:
    make_distribution(
        tmp_path / "site",
        "dispatch-ext-probe",
        entry_points={"probe": "probe_ext:Probe"},
        modules={
            "probe_ext.py": (
                "HEARD = []\n"
                "class Probe:\n"
                "    def __init__(self, label='none'):\n"
                "        self.label = label\n"
                "    def on_job_completed(self, job):\n"
                "        HEARD.append((self.label, job.name))\n"
            )
        },
    )
    config = Config(enable=("probe",), settings={"probe": {"label": "configured"}})
    with on_sys_path(tmp_path / "site"):
        engine = Engine(store=SQLiteStore(tmp_path / "d.sqlite3"), config=config)
        assert "probe" not in engine.registry  # nothing is discovered before the start

        @engine.job("ok")
        def ok(payload: Any) -> None:
            pass

        async def main() -> None:
            async with engine:
                assert "probe" in engine.registry
                await engine.enqueue("ok")
                await engine.drain(timeout=10)

        run(main())
        heard = sys.modules["probe_ext"].HEARD
        assert heard == [("configured", "ok")]

        manual = Engine(store=SQLiteStore(tmp_path / "e.sqlite3"), autoload=False, config=config)

        async def no_discovery() -> None:
            async with manual:
                assert "probe" not in manual.registry

        run(no_discovery())
