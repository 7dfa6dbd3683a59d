"""The Dramatiq broker and actors of the bridge tests, built for one broker and one queue.

Workers load it through ``dramatiq_worker`` (configured by environment variables); the
test process builds its own copy as the producer, with the same actor names.
"""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.middleware import CurrentMessage

from dispatch_ext.bridges.dramatiq import install

RETRY_BACKOFF_MS = 100
"""Milliseconds between attempts (kept short so the suite stays fast)."""


def make_broker(kind: str, url: str, queue: str, **install_options: Any) -> Any:
    """A broker (``redis`` or ``rabbitmq``) with the bridge installed and the test actors."""
    if kind == "redis":
        from dramatiq.brokers.redis import RedisBroker

        broker: Any = RedisBroker(url=url, namespace=f"{queue}-ns")
    else:
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        broker = RabbitmqBroker(url=url)
    broker.add_middleware(CurrentMessage())
    install(broker, **install_options)
    backoff = {"min_backoff": RETRY_BACKOFF_MS, "max_backoff": RETRY_BACKOFF_MS}

    @dramatiq.actor(broker=broker, queue_name=queue, actor_name="bridge_ok")
    def ok(x: int) -> None:
        pass

    @dramatiq.actor(
        broker=broker, queue_name=queue, actor_name="bridge_flaky", max_retries=5, **backoff
    )
    def flaky(fails: int) -> None:
        message = CurrentMessage.get_current_message()
        retries = message.options.get("retries", 0) if message else 0
        if retries < fails:
            raise RuntimeError(f"attempt {retries + 1} fails")

    @dramatiq.actor(
        broker=broker, queue_name=queue, actor_name="bridge_doomed", max_retries=1, **backoff
    )
    def doomed() -> None:
        raise ValueError("always fails")

    @dramatiq.actor(broker=broker, queue_name=queue, actor_name="bridge_aged", max_age=1)
    def aged() -> None:
        raise AssertionError("an expired message must not run")

    return broker
