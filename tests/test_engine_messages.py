"""Cron entries' next fire time, and the warning for jobs no worker runs."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from dispatch_ext.config import Config
from dispatch_ext.engine import Engine, SQLiteStore
from dispatch_ext.engine import engine as engine_module

CONFIG = Config(autoload=False, raw={"engine": {"poll_interval": 0.05}})


def test_a_cron_entry_tells_its_next_fire_time_before_and_after_the_start(
    tmp_path: Path,
) -> None:
    engine = Engine(store=SQLiteStore(tmp_path / "cron.sqlite3"), config=CONFIG)

    @engine.job("tick")
    def tick(payload: Any) -> None:
        pass

    def next_new_year() -> dt.datetime:
        return dt.datetime(dt.datetime.now(dt.timezone.utc).year + 1, 1, 1, tzinfo=dt.timezone.utc)

    before = time.time()
    yearly = engine.cron("yearly", "@yearly", "tick")
    assert yearly.next_run_at == next_new_year()
    every_second = engine.cron("often", "* * * * * *", "tick")
    assert before < every_second.next_run_at.timestamp() <= time.time() + 1

    async def main() -> None:
        async with engine:
            late = engine.cron("late", "@yearly", "tick")  # on a started engine
            assert late.next_run_at == next_new_year()
            second = engine.cron("late-often", "*/2 * * * * *", "tick")
            assert time.time() - 1 < second.next_run_at.timestamp() <= time.time() + 2

    asyncio.run(main())


def test_jobs_nobody_runs_are_reported_once_per_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    db = tmp_path / "strays.sqlite3"
    monkeypatch.setattr(engine_module, "_STRAY_AFTER", 0.1)
    producer = Engine(store=SQLiteStore(db), config=CONFIG)
    worker = Engine(store=SQLiteStore(db), config=CONFIG)
    for engine in (producer, worker):

        @engine.job("known")
        def known(payload: Any) -> None:
            pass

    @producer.job("ghost")
    def ghost(payload: Any) -> None:
        pass

    async def main() -> None:
        for _ in range(3):
            await producer.enqueue("ghost")
        await producer.enqueue("known")
        await producer.stop()
        async with worker:
            deadline = time.monotonic() + 10
            while not [r for r in caplog.records if "'ghost'" in r.getMessage()]:
                assert time.monotonic() < deadline, "no warning"
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.5)  # several more looks: still one warning

    with caplog.at_level(logging.WARNING, logger="dispatch_ext.engine"):
        asyncio.run(main())
    warnings = [r.getMessage() for r in caplog.records if "waiting for over" in r.getMessage()]
    assert warnings == [
        f"{SQLiteStore(db)!r}: jobs named 'ghost' have been waiting for over 0.1 s and this "
        "worker has no handler for them; unless another worker on this store registers "
        "'ghost', they stay pending: register it with @engine.job('ghost') in the workers"
    ]
