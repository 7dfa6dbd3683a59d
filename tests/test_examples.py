"""The example application, ``examples/order_pipeline.py``, and what its run produces."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from dispatch_ext.demo import EventCounter, check_expectations
from dispatch_ext.testing import Recorder

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> ModuleType:
    """``examples.order_pipeline``, imported from the repository root."""
    monkeypatch.syspath_prepend(str(ROOT))
    monkeypatch.chdir(tmp_path)  # its module-level engine names orders.db relative to here
    import examples.order_pipeline as module

    return module


def ids_of(recorder: Recorder, hook: str, name: str) -> list[str]:
    return [e["job"].id for e in recorder.of(hook) if e["job"].name == name]


def job_hooks(recorder: Recorder, job_id: str) -> list[str]:
    return [
        e.hook
        for e in recorder.events
        if "job" in e.kwargs and e.hook != "on_cron_fired" and e["job"].id == job_id
    ]


def run_hooks(recorder: Recorder, run_id: str) -> list[tuple[str, str | None]]:
    return [
        (e.hook, e.kwargs.get("step"))
        for e in recorder.events
        if "run" in e.kwargs and e["run"].id == run_id
    ]


def test_order_pipeline_on_a_memory_store(example: ModuleType) -> None:
    from dispatch_ext.engine import MemoryStore

    recorder, counter = Recorder(), EventCounter()
    shop, engine, pager = example.build(
        MemoryStore(), autoload=False, extensions=[recorder, counter]
    )
    expected = asyncio.run(example.process_orders(engine, shop, seconds=1.2))

    assert check_expectations(counter, expected) == []
    by_name = {e.name: e for e in expected if e.kind == "job"}

    # Fails twice (the supplier times out), then succeeds: never on_job_failed.
    restock = by_name["restock"].id
    assert job_hooks(recorder, restock) == [
        "on_job_enqueued",
        "on_job_started",
        "on_job_retrying",
        "on_job_started",
        "on_job_retrying",
        "on_job_started",
        "on_job_completed",
    ]
    retries = [e for e in recorder.of("on_job_retrying") if e["job"].id == restock]
    assert [e["attempt"] for e in retries] == [1, 2]
    assert all(type(e["error"]).__name__ == "SupplierTimeout" for e in retries)

    # The courier refuses the postcode on every attempt: failed, then the dead-letter queue.
    courier = by_name["book_courier"].id
    assert job_hooks(recorder, courier) == [
        "on_job_enqueued",
        "on_job_started",
        "on_job_retrying",
        "on_job_started",
        "on_job_retrying",
        "on_job_started",
        "on_job_failed",
        "on_job_dlq",
    ]
    assert ids_of(recorder, "on_job_dlq", "book_courier") == [courier]

    # The workflow: three checkpointed steps, or a failure at the middle one.
    runs = {e.what: e.id for e in expected if e.kind == "workflow"}
    assert run_hooks(recorder, runs["A-1004 fulfilment"]) == [
        ("on_workflow_started", None),
        ("on_workflow_step_completed", "reserve_stock"),
        ("on_workflow_step_completed", "charge_card"),
        ("on_workflow_step_completed", "book_courier"),
        ("on_workflow_completed", None),
    ]
    assert run_hooks(recorder, runs["A-1005 fulfilment"]) == [
        ("on_workflow_started", None),
        ("on_workflow_step_completed", "reserve_stock"),
        ("on_workflow_step_failed", "charge_card"),
        ("on_workflow_failed", None),
    ]
    completed = recorder.of("on_workflow_completed")[0]["run"]
    assert completed.output["tracking"] == "TRK-A-1004"

    # The cron entry: each fire's job was enqueued before on_cron_fired; the jobs ran.
    events = recorder.events
    fired = [i for i, e in enumerate(events) if e.hook == "on_cron_fired"]
    assert fired, "the stock report never fired"
    for position in fired:
        entry, job = events[position]["entry"], events[position]["job"]
        assert (entry.name, entry.schedule, job.name) == (
            "stock_report",
            "* * * * * *",
            "report_stock",
        )
        enqueued = [
            i
            for i, e in enumerate(events[:position])
            if e.hook == "on_job_enqueued" and e["job"].id == job.id
        ]
        assert len(enqueued) == 1
    assert len(shop.stock_reports) == len(ids_of(recorder, "on_job_completed", "report_stock")) >= 1

    # The shop's state after the morning, and the application's own extension.
    # mug: 40, A-1001 takes 2, A-1003 1, the restock adds 50; tee: 25, A-1002 takes 1, the
    # two workflow runs reserve 2 each (the declined one keeps its reservation).
    assert shop.warehouse.levels() == {"mug": 40 - 2 - 1 + 50, "tee": 25 - 1 - 2 - 2}
    assert sorted(order for order, _ in shop.gateway.charges) == [
        "A-1001",
        "A-1002",
        "A-1003",
        "A-1004",
    ]
    assert len(shop.mailbox) == 3
    assert shop.courier.bookings == ["TRK-A-1004"]
    assert len(pager.alerts) == 2
    assert "book_courier" in pager.alerts[0] or "book_courier" in pager.alerts[1]
    assert recorder.hooks()[-1] == "on_shutdown"


def test_example_runs_as_a_script_on_sqlite(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
    env.update(
        PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])),
        ORDERS_DB=str(tmp_path / "orders.db"),
        DISPATCH_EXT_AUTOLOAD="0",  # the application alone; the demo tests the built-ins
    )
    result = subprocess.run(
        [sys.executable, "-m", "examples.order_pipeline"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "orders.db").stat().st_size > 0
    lines = dict(line.split(":", 1) for line in result.stdout.splitlines() if ":" in line)
    assert lines["cards charged"].strip() == "4"
    assert lines["receipts sent"].strip() == "3"
    assert lines["parcels booked"].strip() == "['TRK-A-1004']"
    assert lines["on-call pages"].strip() == "2"
    assert result.stdout.count("PAGE on-call:") == 2
