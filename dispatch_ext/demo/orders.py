"""The order pipeline: a small shop's back office, run on the embedded engine.

The shop keeps stock in a warehouse, takes payments through a card gateway, restocks from a
supplier whose API is slow to answer, and books a courier for every parcel. Each of those
is a job; fulfilling one order end to end (reserve stock, charge the card, book the courier)
is a workflow whose steps are checkpointed; a cron entry reports the stock levels.

The outside world is simulated in memory, and some of it misbehaves on purpose so that
every lifecycle event happens:

* the supplier times out on the first two calls for a restock, then answers (two retries,
  then a completion);
* the courier does not deliver to postcode ``ZZ9 9ZZ`` (every attempt fails: the job ends
  in the dead-letter queue);
* the card token ``tok_declined`` is declined (the workflow fails at its middle step).

Use it with any engine::

    from dispatch_ext.engine import Engine
    from dispatch_ext.demo.orders import OrderPipeline

    pipeline = OrderPipeline()
    engine = Engine()
    pipeline.install(engine)

    async with engine:
        await pipeline.submit_sample_orders(engine)
        await engine.drain()
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dispatch_ext.engine import Engine

__all__ = [
    "DECLINED_CARD",
    "GOOD_CARD",
    "UNSERVED_POSTCODE",
    "CardDeclined",
    "CourierRejected",
    "Expectation",
    "OrderPipeline",
    "OutOfStock",
    "SupplierTimeout",
]

DECLINED_CARD = "tok_declined"
"""The card token the simulated gateway declines."""

UNSERVED_POSTCODE = "ZZ9 9ZZ"
"""The postcode the simulated courier does not deliver to."""

GOOD_CARD = "tok_visa"
"""A card token the simulated gateway accepts."""

COURIER_RETRIES = 2
"""Retries of ``book_courier`` after its first attempt."""


class OutOfStock(Exception):
    """The warehouse holds fewer items than the order asks for."""


class CardDeclined(Exception):
    """The card gateway refused the payment."""


class SupplierTimeout(Exception):
    """The supplier's API did not answer in time (worth retrying)."""


class CourierRejected(Exception):
    """The courier refused the parcel (retrying will not help)."""


# -- the simulated outside world ----------------------------------------------------------


class Warehouse:
    """Stock levels per SKU; safe to use from worker threads."""

    def __init__(self, stock: Mapping[str, int]) -> None:
        self._lock = threading.Lock()
        self.stock = dict(stock)

    def reserve(self, order: str, sku: str, qty: int) -> dict[str, Any]:
        with self._lock:
            left = self.stock.get(sku, 0)
            if left < qty:
                raise OutOfStock(f"order {order}: {qty} x {sku} wanted, {left} in stock")
            self.stock[sku] = left - qty
            return {"order": order, "sku": sku, "reserved": qty, "left": left - qty}

    def receive(self, sku: str, qty: int) -> int:
        with self._lock:
            self.stock[sku] = self.stock.get(sku, 0) + qty
            return self.stock[sku]

    def levels(self) -> dict[str, int]:
        with self._lock:
            return dict(self.stock)


class CardGateway:
    """Takes payments; declines :data:`DECLINED_CARD`."""

    def __init__(self) -> None:
        self.charges: list[tuple[str, float]] = []

    async def charge(self, order: str, amount: float, card: str) -> dict[str, Any]:
        await asyncio.sleep(0.01)  # the network round trip
        if card == DECLINED_CARD:
            raise CardDeclined(f"order {order}: the card {card} was declined")
        self.charges.append((order, amount))
        return {"order": order, "charged": amount, "receipt": f"ch_{order}"}


class Supplier:
    """Delivers restocks; its API times out ``failures`` times per request, then answers."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self._calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def restock(self, request: str, sku: str, qty: int) -> dict[str, Any]:
        with self._lock:
            calls = self._calls[request] = self._calls.get(request, 0) + 1
        if calls <= self.failures:
            raise SupplierTimeout(f"restock {request}: the supplier did not answer within 5 s")
        return {"request": request, "sku": sku, "delivered": qty}


class Courier:
    """Books parcels; refuses :data:`UNSERVED_POSTCODE`."""

    def __init__(self) -> None:
        self.bookings: list[str] = []

    def book(self, order: str, postcode: str) -> str:
        if postcode == UNSERVED_POSTCODE:
            raise CourierRejected(f"order {order}: the courier does not deliver to {postcode}")
        tracking = f"TRK-{order}"
        self.bookings.append(tracking)
        return tracking


# -- what a run is expected to produce ------------------------------------------------------


@dataclass(frozen=True)
class Expectation:
    """How one submitted job or workflow run should end.

    Attributes:
        kind: ``"job"`` or ``"workflow"``.
        id: The job id or the run id.
        name: The job or workflow name.
        outcome: The hook that ends it: ``on_job_completed``, ``on_job_dlq``,
            ``on_workflow_completed`` or ``on_workflow_failed``.
        retries: How many ``on_job_retrying`` events come before the outcome.
        what: A few words for people.
    """

    kind: str
    id: str
    name: str
    outcome: str
    retries: int = 0
    what: str = ""


# -- the application ---------------------------------------------------------------------


@dataclass
class OrderPipeline:
    """The shop's jobs, workflow and cron entry, and the simulated services they call.

    Args:
        backoff: Seconds between retries of a failed job (kept short for a demo; a real
            shop would let the engine's default exponential backoff spread them out).
        supplier_failures: How many times the supplier times out before answering.
        report_schedule: The stock report's cron expression; six fields, seconds first.
    """

    backoff: float = 0.2
    supplier_failures: int = 2
    report_schedule: str = "* * * * * *"
    warehouse: Warehouse = field(default_factory=lambda: Warehouse({"mug": 40, "tee": 25}))
    gateway: CardGateway = field(default_factory=CardGateway)
    supplier: Supplier = field(init=False)
    courier: Courier = field(default_factory=Courier)
    mailbox: list[str] = field(default_factory=list)
    stock_reports: list[dict[str, int]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.supplier = Supplier(self.supplier_failures)

    def install(self, engine: Engine) -> None:
        """Register the jobs, the workflow and the cron entry on ``engine``."""
        engine.job("reserve_stock", queue="orders", backoff=self.backoff)(self.reserve_stock)
        engine.job("charge_card", queue="payments", backoff=self.backoff)(self.charge_card)
        engine.job("send_receipt", queue="email", backoff=self.backoff)(self.send_receipt)
        engine.job("restock", queue="supplier", max_retries=3, backoff=self.backoff)(self.restock)
        engine.job(
            "book_courier", queue="shipping", max_retries=COURIER_RETRIES, backoff=self.backoff
        )(self.book_courier)
        engine.job("report_stock", queue="reports")(self.report_stock)
        engine.workflow("fulfil_order")(self.fulfil_order)
        engine.cron("stock_report", self.report_schedule, "report_stock")

    # -- job handlers (a sync handler runs in a worker thread, an async one on the loop) --

    def reserve_stock(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        return self.warehouse.reserve(payload["order"], payload["sku"], payload["qty"])

    async def charge_card(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        return await self.gateway.charge(payload["order"], payload["amount"], payload["card"])

    async def send_receipt(self, payload: Mapping[str, Any]) -> None:
        await asyncio.sleep(0.01)  # the mail server
        self.mailbox.append(f"to {payload['email']}: thank you for order {payload['order']}")

    def restock(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        delivered = self.supplier.restock(payload["request"], payload["sku"], payload["qty"])
        self.warehouse.receive(payload["sku"], payload["qty"])
        return delivered

    def book_courier(self, payload: Mapping[str, Any]) -> str:
        return self.courier.book(payload["order"], payload["postcode"])

    def report_stock(self, payload: Any = None) -> dict[str, int]:
        levels = self.warehouse.levels()
        self.stock_reports.append(levels)
        return levels

    # -- the workflow: each step is checkpointed, so a restarted run resumes after the last
    #    step that completed --------------------------------------------------------------

    async def fulfil_order(self, wf: Any, order: Mapping[str, Any]) -> dict[str, Any]:
        reserved = await wf.step(
            "reserve_stock", self.warehouse.reserve, order["order"], order["sku"], order["qty"]
        )
        payment = await wf.step(
            "charge_card", self.gateway.charge, order["order"], order["amount"], order["card"]
        )
        tracking = await wf.step(
            "book_courier", self.courier.book, order["order"], order["postcode"]
        )
        return {
            "order": order["order"],
            "reserved": reserved,
            "payment": payment,
            "tracking": tracking,
        }

    # -- a morning's worth of orders -----------------------------------------------------

    async def submit_sample_orders(self, engine: Engine) -> list[Expectation]:
        """Enqueue a morning's jobs and start two workflow runs; say how each should end."""
        expected: list[Expectation] = []

        async def job(
            name: str,
            payload: dict[str, Any],
            what: str,
            ends: str = "on_job_completed",
            retries: int = 0,
        ) -> None:
            submitted = await engine.enqueue(name, payload)
            expected.append(Expectation("job", submitted.id, name, ends, retries, what))

        async def fulfil(order: dict[str, Any], what: str, ends: str) -> None:
            submitted = await engine.start_workflow("fulfil_order", order)
            expected.append(Expectation("workflow", submitted.id, "fulfil_order", ends, 0, what))

        # Three web orders, each handled by three independent jobs: all of them succeed.
        for order, sku, qty, amount in (
            ("A-1001", "mug", 2, 24.0),
            ("A-1002", "tee", 1, 18.5),
            ("A-1003", "mug", 1, 12.0),
        ):
            card = {"order": order, "amount": amount, "card": GOOD_CARD}
            email = {"order": order, "email": f"{order.lower()}@example.com"}
            await job("reserve_stock", {"order": order, "sku": sku, "qty": qty}, f"{order} stock")
            await job("charge_card", card, f"{order} payment")
            await job("send_receipt", email, f"{order} receipt")

        # A restock: the supplier times out twice, the third attempt gets through.
        restock = {"request": "R-77", "sku": "mug", "qty": 50}
        await job("restock", restock, "R-77 restock", retries=self.supplier.failures)

        # A parcel the courier refuses on every attempt: retried, then dead-lettered.
        parcel = {"order": "A-1003", "postcode": UNSERVED_POSTCODE}
        await job("book_courier", parcel, "A-1003 parcel", "on_job_dlq", COURIER_RETRIES)

        # Two orders fulfilled end to end; the second one's card is declined at step 2.
        basket = {"sku": "tee", "qty": 2, "amount": 37.0, "postcode": "EC1A 1BB"}
        await fulfil(
            {"order": "A-1004", "card": GOOD_CARD, **basket},
            "A-1004 fulfilment",
            "on_workflow_completed",
        )
        await fulfil(
            {"order": "A-1005", "card": DECLINED_CARD, **basket},
            "A-1005 fulfilment",
            "on_workflow_failed",
        )
        return expected
