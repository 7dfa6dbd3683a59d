"""Fencing: a worker that lost a job or a workflow run cannot store its result.

In one process: the engine's own worker row is removed with ``store.leave`` (what a
recovery by another worker does), so the job (or run) goes back to the queue and is
claimed again while the first attempt is still running. The first attempt's result
must then change nothing and fire no hook. The real scenario, a worker stopped with
SIGSTOP past its lease, is in ``test_engine_workers.py``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from dispatch_ext.config import Config
from dispatch_ext.engine import Engine, MemoryStore, SQLiteStore

CONFIG = Config(autoload=False, raw={"engine": {"poll_interval": 0.05}})


class Heard:
    """Every job and workflow hook, in order."""

    name = "heard"

    def __init__(self) -> None:
        self.events: list[tuple[str, ...]] = []

    def on_job_completed(self, job: Any) -> None:
        self.events.append(("completed", job.id))

    def on_job_retrying(self, job: Any) -> None:
        self.events.append(("retrying", job.id))

    def on_job_failed(self, job: Any) -> None:
        self.events.append(("failed", job.id))

    def on_job_dlq(self, job: Any) -> None:
        self.events.append(("dlq", job.id))

    def on_workflow_step_completed(self, run: Any, step: str) -> None:
        self.events.append(("step", step))

    def on_workflow_completed(self, run: Any) -> None:
        self.events.append(("run-completed", run.id))


def make_store(kind: str, tmp_path: Path) -> Any:
    return SQLiteStore(tmp_path / "fence.sqlite3") if kind == "sqlite" else MemoryStore()


async def wait_until(check: Callable[[], bool]) -> None:
    deadline = asyncio.get_running_loop().time() + 30
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def discarded(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "is discarded" in r.getMessage()]


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
@pytest.mark.parametrize("outcome", ["completes", "retries", "dies"])
def test_the_result_of_a_job_taken_over_is_discarded(
    tmp_path: Path, kind: str, outcome: str, caplog: pytest.LogCaptureFixture
) -> None:
    heard = Heard()
    engine = Engine(store=make_store(kind, tmp_path), extensions=[heard], config=CONFIG)
    attempts: list[int] = []
    release = asyncio.Event()

    @engine.job("hold", max_retries=1 if outcome == "retries" else 0, backoff=0)
    async def hold(payload: Any) -> None:
        attempts.append(len(attempts) + 1)
        if len(attempts) == 1:  # the first attempt outlives its claim
            await release.wait()
            if outcome != "completes":
                raise RuntimeError("the first attempt fails")

    async def main() -> None:
        async with engine:
            job = await engine.enqueue("hold")
            await wait_until(lambda: attempts == [1])
            assert engine.worker_id is not None
            await engine.store.leave(engine.worker_id)  # as a recovery by another worker
            await wait_until(lambda: heard.events == [("completed", job.id)])  # attempt 2
            release.set()
            await wait_until(lambda: bool(discarded(caplog)))
            await asyncio.sleep(0.2)  # time for anything else the first attempt might do
            assert attempts == [1, 2]
            assert heard.events == [("completed", job.id)]  # no hook for attempt 1
            stored = await engine.get_job(job.id)
            assert stored is not None
            assert (stored.state.value, stored.retry_count) == ("completed", 0)
            assert await engine.dlq.list() == []
            (message,) = discarded(caplog)
            assert message.startswith(
                f"job {job.id} ('hold') was taken over by another worker after this "
                "worker's lease expired; its result ("
            )

    with caplog.at_level(logging.WARNING, logger="dispatch_ext.engine"):
        asyncio.run(main())


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
@pytest.mark.parametrize("where", ["before a step", "before the end"])
def test_a_workflow_run_taken_over_stores_and_announces_nothing_more(
    tmp_path: Path, kind: str, where: str, caplog: pytest.LogCaptureFixture
) -> None:
    heard = Heard()
    engine = Engine(store=make_store(kind, tmp_path), extensions=[heard], config=CONFIG)
    gate = asyncio.Event()
    waiting: list[bool] = []
    ran: list[tuple[str, bool]] = []

    def step(name: str, resumed: bool) -> str:
        ran.append((name, resumed))
        return name

    @engine.workflow("flow")
    async def flow(wf: Any, payload: Any) -> list[str]:
        one = await wf.step("one", step, "one", wf.resumed)
        if where == "before a step" and not wf.resumed:
            waiting.append(True)
            await gate.wait()
        two = await wf.step("two", step, "two", wf.resumed)
        if where == "before the end" and not wf.resumed:
            waiting.append(True)
            await gate.wait()
        return [one, two, "first" if not wf.resumed else "second"]

    async def main() -> None:
        async with engine:
            run = await engine.start_workflow("flow")
            await wait_until(lambda: bool(waiting))
            assert engine.worker_id is not None
            await engine.store.leave(engine.worker_id)  # the run is free: claimed again
            await wait_until(lambda: ("run-completed", run.id) in heard.events)
            gate.set()
            await wait_until(lambda: bool(discarded(caplog)))
            await asyncio.sleep(0.2)
            stored = await engine.get_run(run.id)
            assert stored is not None
            assert stored.to_dict()["output"] == ["one", "two", "second"]
            if where == "before a step":  # the first run's step two ran, its result dropped
                assert ran == [("one", False), ("two", True), ("two", False)]
                assert heard.events == [("step", "one"), ("step", "two"), ("run-completed", run.id)]
            else:
                assert ran == [("one", False), ("two", False)]
                assert heard.events == [("step", "one"), ("step", "two"), ("run-completed", run.id)]
            (message,) = discarded(caplog)
            assert message.startswith(
                f"workflow run {run.id} ('flow') was taken over by another worker after this "
                "worker's lease expired; "
            )

    with caplog.at_level(logging.WARNING, logger="dispatch_ext.engine"):
        asyncio.run(main())
