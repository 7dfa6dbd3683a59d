"""The embedded engine's jobs: lifecycle events, retries, ordering, timeouts, refusals."""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import re
import threading
import time
from collections.abc import Callable, Coroutine
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from dispatch_ext import Job, JobState
from dispatch_ext.config import Config
from dispatch_ext.engine import (
    Engine,
    JobTimeoutError,
    MemoryStore,
    PayloadError,
    SQLiteStore,
    UnknownJobError,
)

NO_CONFIG = Config(autoload=False)


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


class Sequence:
    """Records (hook, job name, detail) for the job hooks, in order."""

    name = "sequence"

    def __init__(self) -> None:
        self.events: list[tuple[str, str, Any]] = []
        self.jobs: list[tuple[str, Job]] = []

    def _add(self, hook: str, job: Job, detail: Any = None) -> None:
        self.events.append((hook, job.name, detail))
        self.jobs.append((hook, job))

    def on_job_enqueued(self, job: Job) -> None:
        self._add("enqueued", job)

    def on_job_started(self, job: Job) -> None:
        self._add("started", job)

    def on_job_completed(self, job: Job, elapsed: dt.timedelta) -> None:
        self._add("completed", job)

    def on_job_failed(self, job: Job, error: BaseException) -> None:
        self._add("failed", job, str(error))

    def on_job_retrying(
        self, job: Job, error: BaseException, attempt: int, next_run_at: dt.datetime
    ) -> None:
        self._add("retrying", job, attempt)
        assert next_run_at.tzinfo is not None
        assert next_run_at.utcoffset() == dt.timedelta(0)

    def on_job_dlq(self, job: Job, error: BaseException) -> None:
        self._add("dlq", job, str(error))

    def of(self, name: str) -> list[tuple[str, Any]]:
        return [(hook, detail) for hook, job, detail in self.events if job == name]


@pytest.fixture(params=["sqlite", "memory"])
def make_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[..., Engine]:
    def make(**kwargs: Any) -> Engine:
        store = (
            SQLiteStore(tmp_path / "jobs.sqlite3") if request.param == "sqlite" else MemoryStore()
        )
        kwargs.setdefault("config", NO_CONFIG)
        kwargs.setdefault("autoload", False)
        return Engine(store=store, **kwargs)

    return make


def test_no_retries_left_gives_enqueued_started_failed_dlq(
    make_engine: Callable[..., Engine],
) -> None:
    seq = Sequence()
    engine = make_engine(extensions=[seq])

    @engine.job("explode", max_retries=0)
    def explode(payload: Any) -> None:
        raise ValueError(f"bad {payload['n']}")

    async def main() -> None:
        async with engine:
            await engine.enqueue("explode", {"n": 7})
            await engine.drain(timeout=10)
            dead = await engine.dlq.list()
            assert [entry.job.name for entry in dead] == ["explode"]
            assert dead[0].error == "ValueError: bad 7"
            assert dead[0].job.state is JobState.DEAD
            assert (await engine.counts())["dead"] == 1

    run(main())
    assert seq.of("explode") == [
        ("enqueued", None),
        ("started", None),
        ("failed", "bad 7"),
        ("dlq", "bad 7"),
    ]
    states = [job.state for _, job in seq.jobs]
    assert states == [JobState.PENDING, JobState.RUNNING, JobState.FAILED, JobState.DEAD]


def test_fails_twice_then_succeeds_retries_without_failing(
    make_engine: Callable[..., Engine],
) -> None:
    seq = Sequence()
    engine = make_engine(extensions=[seq])
    attempts: list[int] = []

    @engine.job("flaky", max_retries=3, backoff=0.01)
    async def flaky(payload: Any) -> None:
        attempts.append(len(attempts) + 1)
        if len(attempts) < 3:
            raise ConnectionError("try again")

    async def main() -> None:
        async with engine:
            job = await engine.enqueue("flaky")
            await engine.drain(timeout=10)
            stored = await engine.get_job(job.id)
            assert stored is not None
            assert stored.state is JobState.COMPLETED
            assert stored.retry_count == 2

    run(main())
    assert attempts == [1, 2, 3]
    assert seq.of("flaky") == [
        ("enqueued", None),
        ("started", None),
        ("retrying", 1),
        ("started", None),
        ("retrying", 2),
        ("started", None),
        ("completed", None),
    ]
    retrying = [job for hook, job in seq.jobs if hook == "retrying"]
    assert [job.retry_count for job in retrying] == [1, 2]
    assert all(job.last_error == "ConnectionError: try again" for job in retrying)


def test_exhausted_retries_fail_once_then_dead_letter(make_engine: Callable[..., Engine]) -> None:
    seq = Sequence()
    engine = make_engine(extensions=[seq])

    @engine.job("never", max_retries=2, backoff=0)
    def never(payload: Any) -> None:
        raise RuntimeError("nope")

    async def main() -> None:
        async with engine:
            await engine.enqueue("never")
            await engine.drain(timeout=10)

    run(main())
    assert [hook for hook, _ in seq.of("never")] == [
        "enqueued",
        "started",
        "retrying",
        "started",
        "retrying",
        "started",
        "failed",
        "dlq",
    ]


def test_priority_then_run_time_order(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(concurrency=1)
    ran: list[str] = []

    @engine.job("note")
    def note(payload: Any) -> None:
        ran.append(payload)

    async def main() -> None:
        # Enqueued before the workers start, so that the order is the store's.
        await engine.enqueue("note", "low-1", priority=-5)
        await engine.enqueue("note", "normal-1")
        await engine.enqueue("note", "high-1", priority=10)
        await engine.enqueue("note", "normal-2")
        await engine.enqueue("note", "high-2", priority=10)
        await engine.enqueue("note", "later-high", priority=99, delay=0.3)
        async with engine:
            await engine.drain(timeout=10)

    run(main())
    assert ran == ["high-1", "high-2", "normal-1", "normal-2", "low-1", "later-high"]


def test_delay_and_run_at_hold_a_job_back(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    ran: list[tuple[str, float]] = []

    @engine.job("mark")
    def mark(payload: Any) -> None:
        ran.append((payload, time.time()))

    async def main() -> tuple[Job, Job]:
        async with engine:
            soon = await engine.enqueue(
                "mark",
                "run_at",
                run_at=dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=0.3),
            )
            later = await engine.enqueue("mark", "delay", delay=dt.timedelta(seconds=0.2))
            await engine.drain(timeout=10)
            return soon, later

    soon, later = run(main())
    when = dict(ran)
    assert soon.run_at is not None
    assert later.run_at is not None
    assert when["run_at"] >= soon.run_at.timestamp()
    assert when["delay"] >= later.run_at.timestamp()


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_timeout_fails_the_attempt(make_engine: Callable[..., Engine], kind: str) -> None:
    seq = Sequence()
    engine = make_engine(extensions=[seq])
    released = threading.Event()

    if kind == "async":

        @engine.job("slow", max_retries=0, timeout=0.2)
        async def slow(payload: Any) -> None:
            await asyncio.sleep(30)

    else:

        @engine.job("slow", max_retries=0, timeout=0.2)
        def slow(payload: Any) -> None:
            released.wait(30)

    @engine.job("quick")
    def quick(payload: Any) -> None:
        pass

    async def main() -> None:
        async with engine:
            await engine.enqueue("slow")
            await engine.drain(timeout=10)
            # The stuck thread does not take the engine's capacity with it.
            await engine.enqueue("quick")
            await engine.enqueue("quick")
            await engine.drain(timeout=10)
        released.set()

    run(main())
    assert [hook for hook, _ in seq.of("slow")] == ["enqueued", "started", "failed", "dlq"]
    failed = next(job for hook, job in seq.jobs if hook == "failed")
    assert failed.last_error is not None
    assert failed.last_error.startswith("JobTimeoutError: job 'slow'")
    assert "0.2 s timeout" in failed.last_error
    assert [hook for hook, _ in seq.of("quick")].count("completed") == 2


def test_timeout_error_type_is_public(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    errors: list[BaseException] = []

    class Catch:
        def on_job_failed(self, error: BaseException) -> None:
            errors.append(error)

    engine.registry.register(Catch())

    @engine.job("slow", max_retries=0, timeout=0.05)
    async def slow(payload: Any) -> None:
        await asyncio.sleep(5)

    async def main() -> None:
        async with engine:
            await engine.enqueue("slow")
            await engine.drain(timeout=10)

    run(main())
    assert len(errors) == 1
    assert isinstance(errors[0], JobTimeoutError)
    assert isinstance(errors[0], TimeoutError)


def test_handler_timeout_error_is_not_mistaken_for_the_job_timeout(
    make_engine: Callable[..., Engine],
) -> None:
    seq = Sequence()
    engine = make_engine(extensions=[seq])

    @engine.job("own-timeout", max_retries=0, timeout=30)
    async def own(payload: Any) -> None:
        raise TimeoutError("the remote service timed out")

    async def main() -> None:
        async with engine:
            await engine.enqueue("own-timeout")
            await engine.drain(timeout=10)

    run(main())
    failed = next(job for hook, job in seq.jobs if hook == "failed")
    assert failed.last_error == "TimeoutError: the remote service timed out"


def test_handler_gets_a_fresh_payload_and_snapshots_are_frozen(
    make_engine: Callable[..., Engine],
) -> None:
    seq = Sequence()
    engine = make_engine(extensions=[seq])
    seen: list[Any] = []

    @engine.job("mutate")
    def mutate(payload: Any) -> None:
        seen.append(copy.deepcopy(payload))
        payload["items"].append(4)

    async def main() -> Job:
        async with engine:
            original = {"items": [1, 2, 3]}
            job = await engine.enqueue("mutate", original)
            original["items"].append(99)  # changing the caller's object changes nothing
            await engine.drain(timeout=10)
            return job

    job = run(main())
    assert seen == [{"items": [1, 2, 3]}]
    assert job.payload["items"] == (1, 2, 3)
    completed = next(j for hook, j in seq.jobs if hook == "completed")
    assert completed.payload["items"] == (1, 2, 3)
    with pytest.raises(TypeError):
        completed.payload["items"] = []  # type: ignore[index]


def test_snapshots_carry_aware_utc_times(make_engine: Callable[..., Engine]) -> None:
    seq = Sequence()
    engine = make_engine(extensions=[seq])

    @engine.job("t")
    def t(payload: Any) -> None:
        pass

    async def main() -> None:
        async with engine:
            await engine.enqueue("t")
            await engine.drain(timeout=10)

    run(main())
    completed = next(job for hook, job in seq.jobs if hook == "completed")
    for moment in (completed.created_at, completed.started_at, completed.completed_at):
        assert moment is not None
        assert moment.utcoffset() == dt.timedelta(0)
    assert completed.created_at <= completed.started_at <= completed.completed_at  # type: ignore[operator]


# -- refusals ---------------------------------------------------------------------------


def test_non_json_payload_is_refused_naming_the_job(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()

    @engine.job("send_report")
    def send(payload: Any) -> None:
        pass

    async def main() -> None:
        with pytest.raises(PayloadError, match="'send_report'") as info:
            await engine.enqueue("send_report", {"when": dt.datetime.now()})
        assert "JSON" in str(info.value)
        with pytest.raises(PayloadError, match="'send_report'"):
            await engine.enqueue("send_report", {"ratio": float("nan")})
        assert isinstance(info.value, TypeError)
        await engine.stop()

    run(main())


def test_unknown_job_name_is_refused_with_a_suggestion(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()

    @engine.job("send_email")
    def send(payload: Any) -> None:
        pass

    async def main() -> None:
        with pytest.raises(UnknownJobError, match="'send_emial'") as info:
            await engine.enqueue("send_emial")
        assert str(info.value) == (
            "no job named 'send_emial' is registered on this engine; did you mean "
            "'send_email'? Registered: 'send_email'. Register it with "
            "@engine.job('send_emial')."
        )
        with pytest.raises(UnknownJobError) as info:
            await engine.enqueue("nosuch_job")
        assert str(info.value) == (
            "no job named 'nosuch_job' is registered on this engine. Registered: "
            "'send_email'. Register it with @engine.job('nosuch_job')."
        )

    run(main())


def test_bad_options_are_refused(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()

    @engine.job("j")
    def j(payload: Any) -> None:
        pass

    async def main() -> None:
        with pytest.raises(TypeError, match="unknown option 'prio'"):
            await engine.enqueue("j", prio=3)
        with pytest.raises(ValueError, match="aware datetime"):
            await engine.enqueue("j", run_at=dt.datetime.now())
        with pytest.raises(TypeError, match="delay or run_at"):
            await engine.enqueue("j", delay=1, run_at=dt.datetime.now(dt.timezone.utc))
        with pytest.raises(ValueError, match="max_retries"):
            await engine.enqueue("j", max_retries=-1)

    run(main())
    with pytest.raises(ValueError, match="already registered"):
        engine.job("j")(lambda payload: None)
    with pytest.raises(ValueError, match="backoff"):
        engine.job("k", backoff=-1)(lambda payload: None)


def test_drain_needs_a_running_engine(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()
    with pytest.raises(RuntimeError, match="async with engine"):
        run(engine.drain())


def test_drain_timeout_says_what_is_left(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine()

    @engine.job("later")
    def later(payload: Any) -> None:
        pass

    async def main() -> None:
        async with engine:
            await engine.enqueue("later", delay=60)
            with pytest.raises(TimeoutError, match="1 pending"):
                await engine.drain(timeout=0.2)

    run(main())


# -- dead-letter queue ------------------------------------------------------------------


def test_dead_letters_list_and_replay(make_engine: Callable[..., Engine]) -> None:
    seq = Sequence()
    engine = make_engine(extensions=[seq])
    fixed = False

    @engine.job("fragile", max_retries=0)
    def fragile(payload: Any) -> str:
        if not fixed:
            raise KeyError(payload["key"])
        return "ok"

    async def main() -> None:
        nonlocal fixed
        async with engine:
            first = await engine.enqueue("fragile", {"key": "a"}, priority=3)
            await engine.drain(timeout=10)
            entries = await engine.dlq.list()
            assert len(entries) == 1
            entry = entries[0]
            assert entry.job.id == first.id
            assert entry.job.priority == 3
            assert entry.error_type == "KeyError"
            assert entry.traceback is not None
            assert "KeyError" in entry.traceback
            assert entry.to_dict()["job"]["payload"] == {"key": "a"}

            fixed = True
            replayed = await engine.dlq.replay(entry.id)
            assert replayed.id != first.id
            assert replayed.name == "fragile"
            assert replayed.payload["key"] == "a"
            assert replayed.priority == 3
            await engine.drain(timeout=10)
            stored = await engine.get_job(replayed.id)
            assert stored is not None
            assert stored.state is JobState.COMPLETED

            assert await engine.dlq.list() == []
            everything = await engine.dlq.list(include_replayed=True)
            assert everything[0].replayed_as == replayed.id
            with pytest.raises(LookupError, match="already replayed"):
                await engine.dlq.replay(entry.id)
            with pytest.raises(LookupError, match="no dead-letter entry with id 999"):
                await engine.dlq.replay(999)

    run(main())
    assert [hook for hook, _ in seq.of("fragile")] == [
        "enqueued",
        "started",
        "failed",
        "dlq",
        "enqueued",
        "started",
        "completed",
    ]


def test_many_jobs_complete_with_both_handler_kinds(make_engine: Callable[..., Engine]) -> None:
    engine = make_engine(concurrency=3)
    done: list[int] = []

    @engine.job("sync")
    def sync_job(payload: Any) -> None:
        done.append(payload)

    @engine.job("async")
    async def async_job(payload: Any) -> None:
        await asyncio.sleep(0)
        done.append(payload)

    async def main() -> None:
        await asyncio.gather(*(engine.enqueue("sync", i) for i in range(150)))
        async with engine:
            await asyncio.gather(*(engine.enqueue("async", i) for i in range(150, 300)))
            await engine.drain(timeout=30)
            counts = await engine.counts()
            assert counts["completed"] == 300
            assert counts["pending"] == counts["running"] == counts["retrying"] == 0

    run(main())
    assert sorted(done) == list(range(300))


def test_enqueue_returns_only_after_the_row_is_committed(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "commit.sqlite3"
    engine = Engine(store=SQLiteStore(path), autoload=False, config=NO_CONFIG)

    @engine.job("j")
    def j(payload: Any) -> None:
        pass

    async def main() -> None:
        jobs = await asyncio.gather(*(engine.enqueue("j", i) for i in range(50)))
        # Another connection (another process, after a crash) sees every row.
        with closing(sqlite3.connect(path)) as other:
            ids = {
                str(row[0]) for row in other.execute("SELECT seq FROM jobs WHERE state = 'pending'")
            }
        assert ids == {job.id for job in jobs}
        await engine.stop()

    run(main())


def test_default_store_is_a_sqlite_file_in_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    engine = Engine(autoload=False, config=NO_CONFIG)
    assert isinstance(engine.store, SQLiteStore)
    assert engine.store.path == Path("dispatch.sqlite3")

    configured = tmp_path / "dispatch.toml"
    configured.write_text('[engine]\ndatabase = "data/jobs.db"\nshutdown_timeout = 3\n')
    engine = Engine(autoload=False, config=configured)
    assert isinstance(engine.store, SQLiteStore)
    assert engine.store.path == Path("data/jobs.db")
    assert engine.settings.shutdown_timeout == 3.0

    engine = Engine(autoload=False)  # ./dispatch.toml is read when no config is given
    assert engine.store.path == Path("data/jobs.db")  # type: ignore[attr-defined]


def test_engine_config_table_typos_are_refused(tmp_path: Path) -> None:
    from dispatch_ext import ConfigError

    path = tmp_path / "dispatch.toml"
    path.write_text('[engine]\ndatabse = "x.db"\n')
    with pytest.raises(ConfigError, match="did you mean 'database'"):
        Engine(autoload=False, config=path)
    path.write_text("[engine]\nworkers = 3\n")
    with pytest.raises(ConfigError) as info:
        Engine(autoload=False, config=path)
    assert str(info.value) == (
        f"{path}: [engine]: unknown key 'workers'. The known keys are: database, concurrency, "
        "shutdown_timeout, poll_interval, keep_completed, lease_timeout."
    )
    for bad, message in [
        ("concurrency = 0", "concurrency must be an integer >= 1, got 0"),
        ("concurrency = 2.5", "concurrency must be an integer >= 1, got 2.5"),
        ("lease_timeout = 0", "lease_timeout must be a number of seconds > 0, got 0"),
        ("poll_interval = 0", "poll_interval must be a number of seconds > 0, got 0"),
        ("keep_completed = -1", "keep_completed must be a number of seconds >= 0, got -1"),
    ]:
        path.write_text(f"[engine]\n{bad}\n")
        with pytest.raises(ConfigError, match=re.escape(message)):
            Engine(autoload=False, config=path)


def test_concurrency_comes_from_the_engine_table_unless_given(tmp_path: Path) -> None:
    path = tmp_path / "dispatch.toml"
    path.write_text("[engine]\nconcurrency = 7\nlease_timeout = 12\n")
    engine = Engine(store=MemoryStore(), autoload=False, config=path)
    assert engine.concurrency == 7
    assert engine.settings.lease_timeout == 12.0
    assert Engine(store=MemoryStore(), autoload=False, concurrency=2, config=path).concurrency == 2
    assert Engine(store=MemoryStore(), autoload=False, config=NO_CONFIG).concurrency == 4
    with pytest.raises(ValueError, match="concurrency must be an integer >= 1"):
        Engine(store=MemoryStore(), autoload=False, concurrency=0, config=NO_CONFIG)

    running: list[int] = []
    peak: list[int] = []
    engine = Engine(store=MemoryStore(), autoload=False, config=path)

    @engine.job("wait")
    async def wait(payload: Any) -> None:
        running.append(1)
        peak.append(len(running))
        await asyncio.sleep(0.05)
        running.pop()

    async def main() -> None:
        async with engine:
            await asyncio.gather(*(engine.enqueue("wait") for _ in range(20)))
            await engine.drain(timeout=10)

    run(main())
    assert max(peak) == 7
