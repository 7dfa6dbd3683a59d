"""The metrics extension on the embedded engine: every counter matches the events heard."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from dispatch_ext_metrics import COUNTERS, MetricsExtension

from dispatch_ext.config import Config
from dispatch_ext.engine import Engine, MemoryStore
from dispatch_ext.testing import Recorder


class Declined(Exception):
    pass


def build_engine(ext: MetricsExtension, recorder: Recorder) -> Engine:
    engine = Engine(
        store=MemoryStore(),
        extensions=[ext, recorder],
        autoload=False,
        concurrency=2,
        config=Config(),
    )
    attempts: dict[str, int] = {}

    @engine.job("ok", queue="fast")
    async def ok(payload: Any) -> None:
        await asyncio.sleep(0.01)

    @engine.job("sync_ok")
    def sync_ok(payload: Any) -> None:
        time.sleep(0.01)

    @engine.job("flaky", queue="slow", max_retries=3, backoff=0.01)
    async def flaky(payload: Any) -> None:
        attempts[payload] = attempts.get(payload, 0) + 1
        if attempts[payload] == 1:
            raise TimeoutError("first attempt times out")

    @engine.job("doomed", max_retries=1, backoff=0.01)
    async def doomed(payload: Any) -> None:
        raise Declined("card declined")

    @engine.workflow("onboard")
    async def onboard(wf: Any, payload: Any) -> str:
        await wf.step("create", lambda: "account")
        await wf.step("welcome", lambda: "sent")
        return "done"

    @engine.workflow("broken")
    async def broken(wf: Any, payload: Any) -> None:
        await wf.step("create", lambda: "account")

        def charge() -> None:
            raise Declined("no funds")

        await wf.step("charge", charge)

    engine.cron("tick", "* * * * * *", "ok")
    return engine


async def run(engine: Engine, recorder: Recorder) -> None:
    async with engine:
        for i in range(5):
            await engine.enqueue("ok", i)
            await engine.enqueue("sync_ok", i)
        await engine.enqueue("flaky", "a")
        await engine.enqueue("doomed", "b")
        await engine.start_workflow("onboard")
        await engine.start_workflow("broken")
        deadline = time.monotonic() + 10
        while not recorder.of("on_cron_fired") and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await engine.drain(timeout=30)


def test_each_counter_equals_the_events_of_its_kind(sdk: Any) -> None:
    recorder = Recorder()
    ext = MetricsExtension(meter_provider=sdk.provider)
    engine = build_engine(ext, recorder)
    asyncio.run(run(engine, recorder))
    readings = sdk.read()
    heard = {hook: len(recorder.of(hook)) for hook in COUNTERS}
    # The run made every kind of event happen at least once.
    assert all(heard.values()), heard
    assert heard["on_job_retrying"] >= 2  # flaky once, doomed once
    assert heard["on_job_failed"] == heard["on_job_dlq"] == 1
    assert heard["on_workflow_failed"] == heard["on_workflow_completed"] == 1
    for hook, spec in COUNTERS.items():
        assert readings.total(spec.name) == heard[hook], spec.name
    assert readings.total("messaging.client.sent.messages") == heard["on_job_enqueued"]
    assert readings.total("messaging.client.consumed.messages") == heard["on_job_started"]

    # Every processing attempt that ended is timed: successes from elapsed, failures and
    # retries from the job's start.
    attempts = heard["on_job_completed"] + heard["on_job_failed"] + heard["on_job_retrying"]
    assert readings.count("messaging.process.duration") == attempts
    assert readings.count("messaging.process.duration", {"error.type": "TimeoutError"}) == 1
    failed_declined = heard["on_job_failed"] + sum(
        1 for e in recorder.of("on_job_retrying") if isinstance(e["error"], Declined)
    )
    assert (
        readings.count("messaging.process.duration", {"error.type": f"{__name__}.Declined"})
        == failed_declined
    )
    assert readings.count("dispatch.workflow.duration") == 2
    assert readings.count("dispatch.workflow.step.duration") == heard["on_workflow_step_completed"]

    # Attributes tell the jobs, queues, workflows, steps and cron entries apart.
    assert readings.total("dispatch.job.completed", {"messaging.destination.name": "slow"}) == 1
    assert readings.total("dispatch.job.dlq", {"dispatch.job.name": "doomed"}) == 1
    assert (
        readings.total(
            "dispatch.workflow.step_failed",
            {"dispatch.workflow.name": "broken", "dispatch.workflow.step": "charge"},
        )
        == 1
    )
    assert (
        readings.total("dispatch.cron.fired", {"dispatch.cron.entry": "tick"})
        == (heard["on_cron_fired"])
    )
