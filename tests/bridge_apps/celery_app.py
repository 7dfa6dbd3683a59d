"""The Celery application of the bridge tests, built for one broker and one queue.

Workers load it through ``celery_worker`` (configured by environment variables); the
test process builds its own copy as the producer, with the same task names.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from celery.exceptions import Reject
from kombu import Exchange, Queue

from dispatch_ext.bridges.celery import install

RETRY_DELAY = 0.1
"""Seconds between attempts (kept short so the suite stays fast)."""


def dead_letter_names(queue: str) -> tuple[str, str]:
    """The dead-letter exchange and queue the test queue routes rejected messages to."""
    return f"{queue}.dlx", f"{queue}.dead"


def make_app(
    broker_url: str,
    queue: str,
    *,
    beat: bool = False,
    **install_options: Any,
) -> Celery:
    """A Celery app whose tasks go to ``queue``, with the bridge installed."""
    app = Celery("bridge_tests", broker=broker_url, set_as_current=False)
    dlx, _ = dead_letter_names(queue)
    app.conf.update(
        task_default_queue=queue,
        task_queues=[
            Queue(
                queue,
                Exchange(queue, type="direct"),
                routing_key=queue,
                queue_arguments={"x-dead-letter-exchange": dlx},
            )
        ],
        task_default_exchange=queue,
        task_default_routing_key=queue,
        task_acks_late=True,
        worker_prefetch_multiplier=1,
        broker_heartbeat=0,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        task_ignore_result=True,
        timezone="UTC",
    )
    if beat:
        app.conf.beat_schedule = {
            "tick": {"task": "bridge.ok", "schedule": 1.0, "args": (41,)},
        }

    @app.task(shared=False, name="bridge.ok")
    def ok(x: int) -> int:
        return x + 1

    @app.task(shared=False, name="bridge.flaky", bind=True, max_retries=5)
    def flaky(self: Any, fails: int) -> str:
        if self.request.retries < fails:
            error = RuntimeError(f"attempt {self.request.retries + 1} fails")
            raise self.retry(exc=error, countdown=RETRY_DELAY)
        return "done"

    @app.task(shared=False, name="bridge.doomed", bind=True, max_retries=1)
    def doomed(self: Any) -> None:
        raise self.retry(exc=ValueError("always fails"), countdown=RETRY_DELAY)

    @app.task(shared=False, name="bridge.step_add")
    def step_add(x: int, y: int = 1) -> int:
        return x + y

    @app.task(shared=False, name="bridge.step_fail")
    def step_fail(x: int) -> int:
        raise ValueError(f"step got {x} and fails")

    @app.task(shared=False, name="bridge.reject")
    def reject() -> None:
        raise Reject(ValueError("refused"), requeue=False)

    @app.task(shared=False, name="bridge.unacked_failure", acks_on_failure=False)
    def unacked_failure() -> None:
        raise ValueError("rejected on failure")

    install(app, **install_options)
    return app
