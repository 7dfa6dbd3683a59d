"""How the engine emits: sync implementations at once, async ones awaited, in order, and
never a job started before its ``on_job_enqueued`` implementations have all returned."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from dispatch_ext import Job
from dispatch_ext.config import Config
from dispatch_ext.engine import Engine, MemoryStore, SQLiteStore

NO_CONFIG = Config(autoload=False)
JOBS = 20


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


class Log:
    """Events in the order they happen, from any thread."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def add(self, what: str, job: Job) -> None:
        with self.lock:
            self.events.append((what, job.id))

    def order_of(self, job_id: str) -> list[str]:
        return [what for what, ident in self.events if ident == job_id]


class SyncEnqueued:
    name = "sync-enqueued"

    def __init__(self, log: Log) -> None:
        self.log = log

    def on_job_enqueued(self, job: Job) -> None:
        self.log.add("enqueued", job)

    def on_job_started(self, job: Job) -> None:
        self.log.add("started", job)


class AsyncEnqueued:
    name = "async-enqueued"

    def __init__(self, log: Log) -> None:
        self.log = log

    async def on_job_enqueued(self, job: Job) -> None:
        self.log.add("async enqueued begins", job)
        await asyncio.sleep(0.01)  # workers are free to run meanwhile
        self.log.add("async enqueued ends", job)


def build(store: str, tmp_path: Path, *extensions: object, **kwargs: Any) -> Engine:
    return Engine(
        store=MemoryStore() if store == "memory" else SQLiteStore(tmp_path / "emit.sqlite3"),
        extensions=extensions,
        autoload=False,
        concurrency=4,
        config=NO_CONFIG,
        **kwargs,
    )


def enqueue_while_running(engine: Engine) -> list[Job]:
    @engine.job("noop")
    def noop(payload: Any) -> None:
        pass

    @engine.job("anoop")
    async def anoop(payload: Any) -> None:
        pass

    async def main() -> list[Job]:
        async with engine:
            jobs = [await engine.enqueue("noop" if i % 2 else "anoop", i) for i in range(JOBS)]
            jobs += await asyncio.gather(*(engine.enqueue("noop", i) for i in range(JOBS)))
            await engine.drain(timeout=30)
            return jobs

    return run(main())


@pytest.mark.parametrize("store", ["sqlite", "memory"])
def test_sync_enqueued_hooks_run_before_the_job_starts(store: str, tmp_path: Path) -> None:
    log = Log()
    jobs = enqueue_while_running(build(store, tmp_path, SyncEnqueued(log)))
    for job in jobs:
        assert log.order_of(job.id) == ["enqueued", "started"]


@pytest.mark.parametrize("store", ["sqlite", "memory"])
def test_async_enqueued_hooks_finish_before_the_job_starts(store: str, tmp_path: Path) -> None:
    log = Log()
    # registered first, so the sync implementation runs after the async one has returned
    engine = build(store, tmp_path, AsyncEnqueued(log), SyncEnqueued(log))
    jobs = enqueue_while_running(engine)
    for job in jobs:
        assert log.order_of(job.id) == [
            "async enqueued begins",
            "async enqueued ends",
            "enqueued",
            "started",
        ]


@pytest.mark.parametrize("strict", [False, True])
def test_a_failing_sync_hook_never_reaches_the_job(
    strict: bool, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISPATCH_EXT_STRICT", "1" if strict else "0")

    class Broken:
        name = "broken"

        def on_job_enqueued(self, job: Job) -> None:
            raise RuntimeError("enqueued broke")

        def on_job_started(self, job: Job) -> None:
            raise RuntimeError("started broke")

    log = Log()
    engine = build("sqlite", tmp_path, Broken(), SyncEnqueued(log))
    assert engine.registry.strict is strict
    with caplog.at_level(logging.ERROR):
        jobs = enqueue_while_running(engine)
    for job in jobs:
        assert log.order_of(job.id) == ["enqueued", "started"]  # the other extension heard all
    assert "enqueued broke" in caplog.text
    assert "started broke" in caplog.text
    ignored = "extension failure(s) ignored by the engine"
    assert (ignored in caplog.text) is strict  # strict: the group reached the engine, no further
    stats = engine.registry.stats()["broken"]
    assert stats["on_job_enqueued"].errors == len(jobs)
    assert stats["on_job_started"].errors == len(jobs)
