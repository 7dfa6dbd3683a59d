"""An order pipeline on the embedded engine: jobs, a workflow, a cron entry, an extension.

From the repository root::

    python -m examples.order_pipeline                 # submit the sample orders, run them, exit
    dispatch-ext run examples.order_pipeline:engine   # a worker: stock report every second

The shop itself (job handlers, the ``fulfil_order`` workflow, the simulated warehouse, card
gateway, supplier and courier) is :class:`dispatch_ext.demo.orders.OrderPipeline`, the same
code ``dispatch-ext demo`` runs. This module shows what an application adds around it: an
engine with a durable store, an extension of its own, and a way to run it.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from dispatch_ext import Job, WorkflowRun
from dispatch_ext.demo.orders import Expectation, OrderPipeline
from dispatch_ext.engine import Engine, SQLiteStore

__all__ = ["OnCallPager", "build", "engine", "pipeline", "process_orders"]

DB_PATH = os.environ.get("ORDERS_DB", "orders.db")
"""Where the jobs are kept; the engine creates the file when it starts."""


class OnCallPager:
    """The application's own extension: pages someone when work is lost for good.

    It implements two hooks only; the engine calls it next to every installed extension
    (audit log, metrics, webhooks, ...).
    """

    name = "pager"

    def __init__(self) -> None:
        self.alerts: list[str] = []

    def on_job_dlq(self, job: Job, error: BaseException) -> None:
        self._page(f"job {job.name} {job.id} is in the dead-letter queue: {error}")

    def on_workflow_failed(self, run: WorkflowRun, error: BaseException) -> None:
        self._page(f"workflow {run.name} {run.id} failed: {error}")

    def _page(self, text: str) -> None:
        self.alerts.append(text)
        print(f"PAGE on-call: {text}")


def build(store: Any = None, **options: Any) -> tuple[OrderPipeline, Engine, OnCallPager]:
    """The shop, an engine running it (on ``store``, default SQLite), and the pager.

    ``options`` go to :class:`~dispatch_ext.engine.Engine` (``autoload``, ``concurrency``,
    ``config``); ``extensions`` there come after the pager.
    """
    pager = OnCallPager()
    extensions = [pager, *options.pop("extensions", ())]
    engine = Engine(
        store=SQLiteStore(DB_PATH) if store is None else store,
        extensions=extensions,
        **options,
    )
    shop = OrderPipeline()
    shop.install(engine)
    return shop, engine, pager


pipeline, engine, pager = build()


async def process_orders(
    engine: Engine, pipeline: OrderPipeline, seconds: float = 2.0
) -> list[Expectation]:
    """Start ``engine``, submit the sample orders, let them finish, shut down gracefully.

    The engine keeps running ``seconds`` after the orders settled, so that the stock
    report (a cron entry, every second) fires a few times.
    """
    async with engine:
        expected = await pipeline.submit_sample_orders(engine)
        await engine.drain(timeout=60)
        await asyncio.sleep(seconds)
        await engine.drain(timeout=60)
    return expected


def main() -> None:
    asyncio.run(process_orders(engine, pipeline))
    print(f"stock left:      {pipeline.warehouse.levels()}")
    print(f"cards charged:   {len(pipeline.gateway.charges)}")
    print(f"receipts sent:   {len(pipeline.mailbox)}")
    print(f"parcels booked:  {pipeline.courier.bookings}")
    print(f"stock reports:   {len(pipeline.stock_reports)}")
    print(f"on-call pages:   {len(pager.alerts)}")


if __name__ == "__main__":
    main()
