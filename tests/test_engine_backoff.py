"""Retry delays: the backoff strategies and how a job uses them."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from dispatch_ext import Job
from dispatch_ext.config import Config
from dispatch_ext.engine import Engine, SQLiteStore, backoff


def test_constant_linear_exponential() -> None:
    assert [backoff.constant(2.5)(n) for n in (1, 2, 9)] == [2.5, 2.5, 2.5]
    assert [backoff.linear(5)(n) for n in (1, 2, 3)] == [5, 10, 15]
    assert [backoff.linear(5, start=1, maximum=8)(n) for n in (1, 2, 3)] == [1, 6, 8]
    assert [backoff.exponential(1)(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert backoff.exponential(1, maximum=60)(50) == 60
    assert backoff.exponential(1, maximum=60)(5000) == 60  # no overflow


def test_jittered_stays_between_half_and_all_of_the_exponential_delay() -> None:
    strategy = backoff.jittered(1.0, maximum=60.0)
    for attempt in range(1, 12):
        ceiling = min(60.0, 2.0 ** (attempt - 1))
        delays = [strategy(attempt) for _ in range(200)]
        assert all(max(1.0, ceiling / 2) <= d <= ceiling for d in delays)
    assert len({strategy(6) for _ in range(50)}) > 1  # it does jitter
    default = backoff.default()
    assert all(1.0 <= default(n) <= 60.0 for n in range(1, 30))


@pytest.mark.parametrize("bad", [-1, "2", True, None])
def test_strategies_refuse_bad_numbers(bad: Any) -> None:
    with pytest.raises(ValueError, match="seconds >= 0"):
        backoff.constant(bad)


def test_a_job_waits_its_backoff_between_attempts(tmp_path: Path) -> None:
    heard: list[tuple[int, Job, dt.datetime]] = []

    class Retries:
        def on_job_retrying(self, job: Job, attempt: int, next_run_at: dt.datetime) -> None:
            heard.append((attempt, job, next_run_at))

    engine = Engine(
        store=SQLiteStore(tmp_path / "b.sqlite3"),
        extensions=[Retries()],
        autoload=False,
        config=Config(autoload=False),
    )
    seen: list[int] = []

    @engine.job("flaky", max_retries=2, backoff=lambda attempt: 0.1 * attempt)
    def flaky(payload: Any) -> None:
        seen.append(len(seen))
        raise RuntimeError("again")

    async def main() -> None:
        async with engine:
            await engine.enqueue("flaky")
            await engine.drain(timeout=10)

    asyncio.run(main())
    assert seen == [0, 1, 2]
    assert [attempt for attempt, _, _ in heard] == [1, 2]
    first, second = heard[0][2], heard[1][2]
    created = heard[0][1].created_at
    assert created is not None
    assert first - created >= dt.timedelta(seconds=0.1)
    assert second - first >= dt.timedelta(seconds=0.2)
    assert heard[1][1].run_at == second


def test_a_raising_backoff_falls_back_to_one_second(tmp_path: Path) -> None:
    def broken(attempt: int) -> float:
        raise ZeroDivisionError

    engine = Engine(
        store=SQLiteStore(tmp_path / "b.sqlite3"), autoload=False, config=Config(autoload=False)
    )
    runs: list[float] = []

    @engine.job("j", max_retries=1, backoff=broken)
    def j(payload: Any) -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("first")

    async def main() -> Job | None:
        async with engine:
            job = await engine.enqueue("j")
            await engine.drain(timeout=10)
            return await engine.get_job(job.id)

    stored = asyncio.run(main())
    assert stored is not None
    assert stored.retry_count == 1
    assert len(runs) == 2
