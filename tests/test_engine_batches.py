"""Short sync jobs handed to a thread several at a time: same events, same outcomes."""

from __future__ import annotations

import asyncio
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from dispatch_ext import Job, JobState
from dispatch_ext.config import Config
from dispatch_ext.engine import Engine, SQLiteStore
from dispatch_ext.engine import worker as worker_module

COUNT = 300


class PerJob:
    """Keeps the hooks each job heard, in order."""

    name = "per-job"

    def __init__(self) -> None:
        self.heard: dict[str, list[str]] = defaultdict(list)
        self.payloads: dict[str, Any] = {}

    def _add(self, hook: str, job: Job) -> None:
        self.heard[job.id].append(hook)
        self.payloads[job.id] = job.payload

    def on_job_enqueued(self, job: Job) -> None:
        self._add("enqueued", job)

    def on_job_started(self, job: Job) -> None:
        self._add("started", job)

    def on_job_completed(self, job: Job) -> None:
        self._add("completed", job)

    def on_job_failed(self, job: Job) -> None:
        self._add("failed", job)

    def on_job_retrying(self, job: Job) -> None:
        self._add("retrying", job)

    def on_job_dlq(self, job: Job) -> None:
        self._add("dlq", job)

    def by_payload(self) -> dict[Any, list[str]]:
        return {self.payloads[job_id]: hooks for job_id, hooks in self.heard.items()}


BATCHES: list[list[Any]] = []


@pytest.fixture
def batch_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every batch handed to a thread (payloads in ``BATCHES``)."""
    sizes: list[int] = []
    BATCHES.clear()
    original = worker_module.run_batch

    def counting(fn: Any, payloads: list[Any], batch: Any, clock: Any) -> None:
        sizes.append(len(payloads))
        BATCHES.append(list(payloads))
        original(fn, payloads, batch, clock)

    monkeypatch.setattr(worker_module, "run_batch", counting)
    return sizes


def build(tmp_path: Path, *extensions: object) -> Engine:
    tmp_path.mkdir(exist_ok=True)
    return Engine(
        store=SQLiteStore(tmp_path / "batches.sqlite3"),
        extensions=extensions,
        autoload=False,
        concurrency=2,
        config=Config(autoload=False),
    )


def run_all(engine: Engine, payloads: list[Any]) -> dict[str, int]:
    async def main() -> dict[str, int]:
        await asyncio.gather(*(engine.enqueue("work", payload) for payload in payloads))
        async with engine:
            await engine.drain(timeout=60)
            return await engine.counts()

    counts: dict[str, int] = asyncio.run(main())
    return counts


def test_batched_jobs_each_hear_their_events_once_in_order(
    tmp_path: Path, batch_sizes: list[int]
) -> None:
    per_job = PerJob()
    engine = build(tmp_path, per_job)
    ran: list[int] = []

    @engine.job("work")
    def work(payload: int) -> None:
        ran.append(payload)

    counts = run_all(engine, list(range(COUNT)))
    assert counts["completed"] == COUNT
    assert sorted(ran) == list(range(COUNT))
    assert max(batch_sizes) > 1  # the short handler was batched
    assert sum(batch_sizes) <= COUNT
    sequences = per_job.by_payload()
    assert len(sequences) == COUNT
    assert all(hooks == ["enqueued", "started", "completed"] for hooks in sequences.values())


def test_errors_inside_a_batch_fail_only_their_job(tmp_path: Path, batch_sizes: list[int]) -> None:
    per_job = PerJob()
    engine = build(tmp_path, per_job)

    @engine.job("work", max_retries=0)
    def work(payload: int) -> None:
        if payload % 7 == 3:
            raise ValueError(f"bad {payload}")

    counts = run_all(engine, list(range(COUNT)))
    bad = [n for n in range(COUNT) if n % 7 == 3]
    assert counts["dead"] == len(bad)
    assert counts["completed"] == COUNT - len(bad)
    assert max(batch_sizes) > 1
    for payload, hooks in per_job.by_payload().items():
        if payload in bad:
            assert hooks == ["enqueued", "started", "failed", "dlq"]
        else:
            assert hooks == ["enqueued", "started", "completed"]


def test_a_timeout_inside_a_batch_fails_that_job_and_the_others_still_run(
    tmp_path: Path, batch_sizes: list[int]
) -> None:
    stuck = 150

    def attempt(folder: Path) -> bool:
        """One run; whether the stuck job ran inside a batch with jobs behind it."""
        per_job = PerJob()
        engine = build(folder, per_job)
        release = threading.Event()
        BATCHES.clear()

        @engine.job("work", max_retries=0, timeout=0.3)
        def work(payload: int) -> None:
            if payload == stuck:
                release.wait(10)

        try:
            counts = run_all(engine, list(range(COUNT)))
        finally:
            release.set()
        assert counts["dead"] == 1
        assert counts["completed"] == COUNT - 1
        sequences = per_job.by_payload()
        assert sequences[stuck] == ["enqueued", "started", "failed", "dlq"]
        assert all(
            hooks == ["enqueued", "started", "completed"]
            for payload, hooks in sequences.items()
            if payload != stuck
        )

        async def dead_error() -> str:
            entries = await engine.dlq.list()
            await engine.stop()
            return entries[0].error

        assert "did not finish within its 0.3 s timeout" in asyncio.run(dead_error())
        return any(stuck in payloads and payloads[-1] != stuck for payloads in BATCHES)

    # Where batches begin depends on timing: run until the stuck job had followers.
    for n in range(6):
        if attempt(tmp_path / f"run{n}"):
            break
    else:
        pytest.fail("the stuck job never ran inside a batch with jobs behind it")


def test_slow_handlers_are_not_batched(tmp_path: Path, batch_sizes: list[int]) -> None:
    engine = build(tmp_path)

    @engine.job("work")
    def work(payload: int) -> None:
        threading.Event().wait(0.003)

    counts = run_all(engine, list(range(40)))
    assert counts["completed"] == 40
    assert batch_sizes == []


def test_stored_state_matches_after_batches(tmp_path: Path) -> None:
    engine = build(tmp_path)

    @engine.job("work")
    def work(payload: int) -> int:
        return payload

    counts = run_all(engine, list(range(COUNT)))
    assert counts == {
        "pending": 0,
        "running": 0,
        "retrying": 0,
        "completed": COUNT,
        "failed": 0,
        "dead": 0,
    }

    async def one() -> Job | None:
        job = await engine.get_job("1")
        await engine.stop()
        return job

    job = asyncio.run(one())
    assert job is not None
    assert job.state is JobState.COMPLETED
