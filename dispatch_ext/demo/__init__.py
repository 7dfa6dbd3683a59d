"""The bundled example: an order pipeline, and ``dispatch-ext demo`` that runs it.

* :mod:`dispatch_ext.demo.orders` is the application (jobs, a workflow, a cron entry),
  usable on any engine; ``examples/order_pipeline.py`` in the repository runs it too.
* :mod:`dispatch_ext.demo.counter` is an extension that hears all 13 hooks and counts them.
* :mod:`dispatch_ext.demo.runner` is the demo itself: :func:`run_demo`.

Importing this package imports neither the engine nor OpenTelemetry.
"""

from __future__ import annotations

from .counter import Event, EventCounter, check_expectations
from .orders import Expectation, OrderPipeline

__all__ = ["Event", "EventCounter", "Expectation", "OrderPipeline", "check_expectations"]
