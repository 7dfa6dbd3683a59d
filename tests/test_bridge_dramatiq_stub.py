"""The Dramatiq middleware in one process, on Dramatiq's own in-memory ``StubBroker``.

The sequences on real brokers and worker processes are in ``test_bridge_dramatiq.py``;
here are the set-ups those do not use: no ``Retries`` middleware, ``throws``, the
middleware's place, an in-process ``Worker``.
"""

from __future__ import annotations

from collections.abc import Iterator

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AgeLimit, Retries

from dispatch_ext.bridges.dramatiq import DispatchMiddleware, install
from dispatch_ext.testing import Recorder


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


def _run(broker: StubBroker, queue: str = "default") -> None:
    worker = dramatiq.Worker(broker, worker_timeout=50, worker_threads=1)
    worker.start()
    try:
        broker.join(queue, timeout=10_000, fail_fast=False)
        worker.join()
    finally:
        worker.stop()


@pytest.fixture
def broker() -> Iterator[StubBroker]:
    stub = StubBroker()
    stub.emit_after("process_boot")
    yield stub
    stub.close()


def test_installed_once_right_before_retries(broker: StubBroker) -> None:
    middleware = install(broker, autoload=False)
    assert install(broker, autoload=False) is middleware
    kinds = [type(m) for m in broker.middleware]
    assert kinds.count(DispatchMiddleware) == 1
    assert kinds.index(DispatchMiddleware) == kinds.index(Retries) - 1
    assert kinds.index(AgeLimit) < kinds.index(DispatchMiddleware)


def test_in_process_worker_boots_and_shuts_down_the_extensions(
    broker: StubBroker, recorder: Recorder
) -> None:
    install(broker, extensions=[recorder], autoload=False)

    @dramatiq.actor(broker=broker)
    def add(x: int) -> None:
        pass

    message = add.send(1)
    _run(broker)
    assert recorder.hooks() == [
        "on_job_enqueued",
        "on_job_started",
        "on_job_completed",
        "on_shutdown",
    ]
    assert {e["job"].id for e in recorder.events if "job" in e.kwargs} == {message.message_id}


def test_throws_fails_at_once_and_dead_letters(broker: StubBroker, recorder: Recorder) -> None:
    install(broker, extensions=[recorder], autoload=False)

    @dramatiq.actor(broker=broker, throws=(ValueError,))
    def refuse() -> None:
        raise ValueError("not retried")

    refuse.send()
    _run(broker)
    assert recorder.hooks() == [
        "on_job_enqueued",
        "on_job_started",
        "on_job_failed",
        "on_job_dlq",
        "on_shutdown",
    ]
    assert str(recorder.of("on_job_dlq")[0]["error"]) == "not retried"
    assert len(broker.dead_letters) == 1


def test_without_retries_a_failure_is_final_and_acknowledged(recorder: Recorder) -> None:
    broker = StubBroker(middleware=[])
    try:
        install(broker, extensions=[recorder], autoload=False)

        @dramatiq.actor(broker=broker)
        def fail() -> None:
            raise RuntimeError("no retries here")

        fail.send()
        _run(broker)
    finally:
        broker.close()
    assert recorder.hooks() == ["on_job_enqueued", "on_job_started", "on_job_failed", "on_shutdown"]
    assert broker.dead_letters == []
