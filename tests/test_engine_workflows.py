"""Workflows on the embedded engine: checkpointed steps, failures, resumption."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from dispatch_ext import RunState, WorkflowRun
from dispatch_ext.config import Config
from dispatch_ext.engine import (
    Engine,
    MemoryStore,
    PayloadError,
    SQLiteStore,
    UnknownWorkflowError,
    WorkflowContext,
)

NO_CONFIG = Config(autoload=False)


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


class Flow:
    name = "flow"

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.runs: list[WorkflowRun] = []

    def on_workflow_started(self, run: WorkflowRun) -> None:
        self.events.append(("started",))
        self.runs.append(run)

    def on_workflow_step_completed(
        self, run: WorkflowRun, step: str, elapsed: dt.timedelta
    ) -> None:
        assert isinstance(elapsed, dt.timedelta)
        self.events.append(("step_completed", step))

    def on_workflow_step_failed(self, run: WorkflowRun, step: str, error: BaseException) -> None:
        self.events.append(("step_failed", step, str(error)))

    def on_workflow_completed(self, run: WorkflowRun, elapsed: dt.timedelta) -> None:
        self.events.append(("completed",))
        self.runs.append(run)

    def on_workflow_failed(self, run: WorkflowRun, error: BaseException) -> None:
        self.events.append(("failed", str(error)))
        self.runs.append(run)


def make(tmp_path: Path, flow: Flow, store: str = "sqlite") -> Engine:
    chosen = SQLiteStore(tmp_path / "wf.sqlite3") if store == "sqlite" else MemoryStore()
    return Engine(store=chosen, extensions=[flow], autoload=False, config=NO_CONFIG)


@pytest.mark.parametrize("store", ["sqlite", "memory"])
def test_three_steps_complete_in_order(tmp_path: Path, store: str) -> None:
    flow = Flow()
    engine = make(tmp_path, flow, store)

    def reserve(order: int) -> dict[str, int]:
        return {"order": order, "reserved": 2}

    async def charge(reservation: dict[str, int], amount: float) -> float:
        await asyncio.sleep(0)
        return amount * reservation["reserved"]

    @engine.workflow("checkout")
    async def checkout(wf: WorkflowContext, payload: Any) -> dict[str, Any]:
        reservation = await wf.step("reserve", reserve, payload["order"])
        total = await wf.step("charge", charge, reservation, 9.5)
        note = await wf.step("notify", lambda: f"order {payload['order']} paid")
        return {"total": total, "note": note}

    async def main() -> WorkflowRun:
        async with engine:
            started = await engine.start_workflow("checkout", {"order": 42})
            assert started.state is RunState.RUNNING
            await engine.drain(timeout=10)
            stored = await engine.get_run(started.id)
            assert stored is not None
            return stored

    stored = run(main())
    assert flow.events == [
        ("started",),
        ("step_completed", "reserve"),
        ("step_completed", "charge"),
        ("step_completed", "notify"),
        ("completed",),
    ]
    assert stored.state is RunState.COMPLETED
    assert stored.to_dict()["output"] == {"total": 19.0, "note": "order 42 paid"}
    assert flow.runs[-1].output["total"] == 19.0
    assert stored.completed_at is not None
    assert stored.started_at is not None
    assert stored.completed_at >= stored.started_at


def test_failing_middle_step_fails_the_run(tmp_path: Path) -> None:
    flow = Flow()
    engine = make(tmp_path, flow)
    ran: list[str] = []

    def ok(name: str) -> str:
        ran.append(name)
        return name

    def broken() -> None:
        raise RuntimeError("card declined")

    @engine.workflow("pay")
    async def pay(wf: WorkflowContext, payload: Any) -> None:
        await wf.step("first", ok, "first")
        await wf.step("second", broken)
        await wf.step("third", ok, "third")

    async def main() -> WorkflowRun:
        async with engine:
            started = await engine.start_workflow("pay")
            await engine.drain(timeout=10)
            stored = await engine.get_run(started.id)
            assert stored is not None
            return stored

    stored = run(main())
    assert ran == ["first"]
    assert flow.events == [
        ("started",),
        ("step_completed", "first"),
        ("step_failed", "second", "card declined"),
        ("failed", "card declined"),
    ]
    assert stored.state is RunState.FAILED
    assert stored.error == "RuntimeError: card declined"


def test_caught_step_failure_lets_the_run_go_on(tmp_path: Path) -> None:
    flow = Flow()
    engine = make(tmp_path, flow)
    tries = 0

    def shaky() -> str:
        nonlocal tries
        tries += 1
        if tries == 1:
            raise ConnectionError("blip")
        return "fine"

    @engine.workflow("retry-by-hand")
    async def retry_by_hand(wf: WorkflowContext, payload: Any) -> str:
        try:
            return str(await wf.step("call", shaky))
        except ConnectionError:
            return str(await wf.step("call", shaky))

    async def main() -> None:
        async with engine:
            await engine.start_workflow("retry-by-hand")
            await engine.drain(timeout=10)

    run(main())
    assert flow.events == [
        ("started",),
        ("step_failed", "call", "blip"),
        ("step_completed", "call"),
        ("completed",),
    ]


def test_step_names_are_unique_within_a_run(tmp_path: Path) -> None:
    flow = Flow()
    engine = make(tmp_path, flow)

    @engine.workflow("twice")
    async def twice(wf: WorkflowContext, payload: Any) -> None:
        await wf.step("same", lambda: 1)
        await wf.step("same", lambda: 2)

    async def main() -> None:
        async with engine:
            await engine.start_workflow("twice")
            await engine.drain(timeout=10)

    run(main())
    assert flow.events[-1][0] == "failed"
    assert "step 'same' already completed" in flow.events[-1][1]


def test_non_json_step_result_fails_the_step(tmp_path: Path) -> None:
    flow = Flow()
    engine = make(tmp_path, flow)

    @engine.workflow("odd")
    async def odd(wf: WorkflowContext, payload: Any) -> None:
        await wf.step("make-set", lambda: {1, 2})

    async def main() -> None:
        async with engine:
            await engine.start_workflow("odd")
            await engine.drain(timeout=10)

    run(main())
    kind, step, error = flow.events[1]
    assert (kind, step) == ("step_failed", "make-set")
    assert "step 'make-set' of workflow 'odd'" in error
    assert flow.events[-1][0] == "failed"


def test_workflow_refusals(tmp_path: Path) -> None:
    engine = make(tmp_path, Flow())

    @engine.workflow("import_orders")
    async def import_orders(wf: WorkflowContext, payload: Any) -> None:
        pass

    with pytest.raises(TypeError, match="async def"):
        engine.workflow("sync")(lambda wf, payload: None)  # type: ignore[arg-type,return-value]

    async def main() -> None:
        with pytest.raises(UnknownWorkflowError, match="did you mean 'import_orders'"):
            await engine.start_workflow("import_order")
        with pytest.raises(UnknownWorkflowError) as info:
            await engine.start_workflow("nightly")
        assert str(info.value) == (
            "no workflow named 'nightly' is registered on this engine. Registered: "
            "'import_orders'. Register it with @engine.workflow('nightly')."
        )
        with pytest.raises(PayloadError, match="workflow 'import_orders'"):
            await engine.start_workflow("import_orders", {"file": Path("x")})
        await engine.stop()

    run(main())


def test_shutdown_between_steps_leaves_the_run_to_resume(tmp_path: Path) -> None:
    flow = Flow()

    def build() -> tuple[Engine, list[str]]:
        engine = make(tmp_path, flow)
        ran: list[str] = []

        async def slow_step() -> str:
            ran.append("slow")
            await asyncio.sleep(0.3)
            return "slow"

        @engine.workflow("long")
        async def long(wf: WorkflowContext, payload: Any) -> list[str]:
            a = await wf.step("slow", slow_step)
            b = await wf.step("after", lambda: ran.append("after") or "after")
            return [a, b]

        return engine, ran

    first, ran_first = build()

    async def interrupt() -> str:
        async with first:
            started = await first.start_workflow("long")
            await asyncio.sleep(0.1)  # inside the slow step when the shutdown begins
        return started.id

    run_id = run(interrupt())
    assert ran_first == ["slow"]  # the running step finished, the next one did not start
    second, ran_second = build()

    async def resume() -> WorkflowRun | None:
        async with second:
            await second.drain(timeout=10)
            return await second.get_run(run_id)

    stored = run(resume())
    assert ran_second == ["after"]
    assert stored is not None
    assert stored.state is RunState.COMPLETED
    assert json.loads(json.dumps(stored.to_dict()["output"])) == ["slow", "after"]
    assert [e for e in flow.events if e[0] == "started"] == [("started",)]
