"""The webhooks extension on the embedded engine: every event heard arrives, verified."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from dispatch_ext_webhooks import EVENT_TYPES, HOOK_EVENTS, WebhookExtension
from dispatch_ext_webhooks.receiver import Receiver
from standardwebhooks import Webhook

from dispatch_ext.config import Config
from dispatch_ext.engine import Engine, MemoryStore
from dispatch_ext.testing import Recorder


class Declined(Exception):
    pass


def build_engine(extensions: list[object]) -> Engine:
    engine = Engine(
        store=MemoryStore(), extensions=extensions, autoload=False, concurrency=2, config=Config()
    )
    attempts: dict[str, int] = {}

    @engine.job("ok")
    async def ok(payload: Any) -> None:
        await asyncio.sleep(0.005)

    @engine.job("flaky", max_retries=2, backoff=0.01)
    def flaky(payload: Any) -> None:
        attempts[payload] = attempts.get(payload, 0) + 1
        if attempts[payload] == 1:
            raise TimeoutError("first attempt")

    @engine.job("doomed", max_retries=0)
    async def doomed(payload: Any) -> None:
        raise Declined("Karte abgelehnt ❌\u2028bitte erneut versuchen")

    @engine.workflow("onboard")
    async def onboard(wf: Any, payload: Any) -> str:
        await wf.step("create", lambda: "account")
        return "done"

    @engine.workflow("broken")
    async def broken(wf: Any, payload: Any) -> None:
        def charge() -> None:
            raise Declined("no funds")

        await wf.step("charge", charge)

    engine.cron("tick", "* * * * * *", "ok")
    return engine


async def run(engine: Engine, recorder: Recorder) -> None:
    async with engine:
        for i in range(10):
            await engine.enqueue("ok", {"i": i})
        await engine.enqueue("flaky", "a")
        await engine.enqueue("doomed", "b")
        await engine.start_workflow("onboard", {"user": 1})
        await engine.start_workflow("broken")
        deadline = time.monotonic() + 10
        while not recorder.of("on_cron_fired") and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await engine.drain(timeout=30)


def test_every_event_of_a_run_arrives_verified_once(
    make_extension: Callable[..., WebhookExtension],
    serve: Callable[..., Receiver],
    secret: str,
) -> None:
    receiver = serve(secret)
    ext = make_extension(url=receiver.url, secret=secret, shutdown_timeout=20)
    recorder = Recorder()
    engine = build_engine([recorder, ext])
    asyncio.run(run(engine, recorder))
    # The engine's shutdown drained the sender: everything is there already.
    heard = Counter(HOOK_EVENTS[e.hook] for e in recorder.events if e.hook != "on_shutdown")
    assert set(heard) == set(EVENT_TYPES)  # the run produced every kind of event
    assert sum(heard.values()) == len(receiver.accepted)
    assert Counter(event["type"] for event in receiver.accepted.values()) == heard
    for delivery in receiver.deliveries:
        assert Webhook(secret).verify(delivery.body, delivery.headers)
    assert len(receiver.deliveries) == len(receiver.accepted)  # nothing sent twice
    assert ext.counts() == {}

    # The payloads are the engine's snapshots.
    dlq = next(e for e in receiver.accepted.values() if e["type"] == "dispatch.job.dlq")
    assert dlq["data"]["job"]["state"] == "dead"
    assert dlq["data"]["job"]["name"] == "doomed"
    assert dlq["data"]["error"] == {
        "type": f"{__name__}.Declined",
        "message": "Karte abgelehnt ❌\u2028bitte erneut versuchen",
    }
    retrying = next(e for e in receiver.accepted.values() if e["type"] == "dispatch.job.retrying")
    assert retrying["data"]["attempt"] == 1
    assert retrying["data"]["next_run_at"]
    fired = next(e for e in receiver.accepted.values() if e["type"] == "dispatch.cron.fired")
    assert fired["data"]["entry"]["name"] == "tick"
    assert fired["data"]["job"]["name"] == "ok"
    completed = [
        e for e in receiver.accepted.values() if e["type"] == "dispatch.workflow.completed"
    ]
    assert completed[0]["data"]["run"]["output"] == "done"
    assert completed[0]["data"]["elapsed"] >= 0
