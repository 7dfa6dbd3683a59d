"""The Celery bridge on the producer side, in one process (kombu's in-memory transport).

Worker-side sequences on real brokers are in ``test_bridge_celery.py``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from celery.schedules import crontab, schedule
from kombu import Exchange, Queue

from dispatch_ext.bridges.celery import CeleryBridge, _describe_schedule, install
from dispatch_ext.testing import Recorder


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def app(recorder: Recorder) -> Iterator[Celery]:
    app = Celery("publish_tests", broker="memory://", set_as_current=False)
    app.conf.task_default_queue = "jobs"

    @app.task(shared=False, name="publish.add", max_retries=None)
    def add(x: int, y: int = 1) -> int:
        return x + y

    bridge = install(app, extensions=[recorder], autoload=False)
    try:
        yield app
    finally:
        bridge.disconnect()


def _add(app: Celery) -> Any:
    return app.tasks["publish.add"]


def test_a_publish_is_one_enqueue(app: Celery, recorder: Recorder) -> None:
    result = _add(app).apply_async((1,), {"y": 2}, countdown=60)
    [event] = recorder.of("on_job_enqueued")
    job = event["job"]
    assert (job.id, job.name, job.queue, job.state) == (result.id, "publish.add", "jobs", "pending")
    assert job.payload == {"args": (1,), "kwargs": {"y": 2}}
    assert job.max_retries == -1  # max_retries=None: retried forever
    assert job.run_at is not None
    assert job.run_at.tzinfo == dt.timezone.utc
    assert job.run_at - job.created_at > dt.timedelta(seconds=50)


def test_a_retry_publish_is_not_an_enqueue(app: Celery, recorder: Recorder) -> None:
    _add(app).apply_async((1,), task_id="same-id", retries=1)
    assert recorder.hooks() == []


def test_a_beat_publish_is_enqueued_then_fired(app: Celery, recorder: Recorder) -> None:
    result = _add(app).apply_async((5,), headers={"celery_beat_task": True})
    assert recorder.hooks() == ["on_job_enqueued", "on_cron_fired"]
    fired = recorder.of("on_cron_fired")[0]
    assert fired["job"].id == result.id
    assert fired["job"] is recorder.of("on_job_enqueued")[0]["job"]
    assert fired["entry"].job_name == "publish.add"


def test_install_is_idempotent_and_disconnect_stops_the_events(
    app: Celery, recorder: Recorder
) -> None:
    bridge = install(app)
    assert isinstance(bridge, CeleryBridge)
    assert install(app, extensions=[Recorder("other")]) is bridge
    _add(app).delay(1)
    assert recorder.hooks() == ["on_job_enqueued"]

    bridge.disconnect()
    _add(app).delay(2)
    assert recorder.hooks() == ["on_job_enqueued"]


def test_dead_lettering_needs_amqp_and_a_dead_letter_exchange() -> None:
    """A rejected message is dead-lettered where its queue declares a dead-letter exchange."""
    dead = Queue("dead", Exchange("dead"), queue_arguments={"x-dead-letter-exchange": "x"})
    verdicts = {}
    for url in ("amqp://guest:guest@127.0.0.1//", "redis://127.0.0.1:6379/0"):
        app = Celery("dlx", broker=url, set_as_current=False)
        app.conf.task_queues = [Queue("plain"), dead]
        app.conf.task_default_queue = "plain"
        app.conf.task_routes = {"dlx.dead": {"queue": "dead"}}
        bridge = install(app, autoload=False)
        try:
            for name in ("plain", "dead"):

                def noop() -> None:
                    pass

                task = app.task(shared=False, name=f"dlx.{name}")(noop)
                verdicts[(url.split(":")[0], name)] = bridge._dead_lettered(task)
        finally:
            bridge.disconnect()
    assert verdicts == {
        ("amqp", "plain"): False,
        ("amqp", "dead"): True,
        ("redis", "plain"): False,
        ("redis", "dead"): False,
    }


def test_beat_schedules_are_described() -> None:
    assert _describe_schedule(crontab(minute="*/5", hour="4")) == "*/5 4 * * *"
    assert _describe_schedule(schedule(dt.timedelta(seconds=10))) == "every 10s"
