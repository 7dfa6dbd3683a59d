"""Registry: emits from several threads at once, and registration while emitting."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator

import pytest

from dispatch_ext import Job, Registry

JOB = Job(id="j1", name="send_email")
THREADS = 8


@pytest.fixture
def registry() -> Iterator[Registry]:
    registry = Registry(strict=False)
    yield registry
    registry.close()


class Counter:
    """Counts its calls under a lock, so the count itself is exact."""

    def __init__(self, name: str, fail: bool = False) -> None:
        self.name = name
        self.fail = fail
        self.count = 0
        self._lock = threading.Lock()

    def on_job_started(self, job: Job) -> None:
        with self._lock:
            self.count += 1
        if self.fail:
            raise RuntimeError("counted, then failed")


class AsyncCounter(Counter):
    async def on_job_started(self, job: Job) -> None:  # type: ignore[override]
        await asyncio.sleep(0)
        with self._lock:
            self.count += 1


def run_threads(target: Callable[[], None]) -> None:
    barrier = threading.Barrier(THREADS)
    errors: list[BaseException] = []

    def work() -> None:
        barrier.wait()
        try:
            target()
        except BaseException as exc:  # collected and re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


@pytest.fixture
def quiet_errors() -> Iterator[None]:
    log = logging.getLogger("dispatch_ext")
    log.disabled = True  # thousands of expected failure tracebacks are not the point here
    yield
    log.disabled = False


@pytest.mark.usefixtures("quiet_errors")
def test_concurrent_emits_call_everyone_and_count_right(registry: Registry) -> None:
    per_thread = 2_000
    counters = [Counter("a"), Counter("b", fail=True), Counter("c")]
    for counter in counters:
        registry.register(counter)

    def emit_many() -> None:
        for _ in range(per_thread):
            registry.emit("on_job_started", job=JOB)

    run_threads(emit_many)

    total = THREADS * per_thread
    assert [c.count for c in counters] == [total] * 3
    stats = registry.stats()
    assert {name: s["on_job_started"].calls for name, s in stats.items()} == {
        "a": total,
        "b": total,
        "c": total,
    }
    assert stats["b"]["on_job_started"].errors == total
    assert stats["a"]["on_job_started"].errors == 0


def test_concurrent_emits_to_async_implementations(registry: Registry) -> None:
    per_thread = 100
    counter = AsyncCounter("async")
    registry.register(counter)

    def emit_many() -> None:
        for _ in range(per_thread):
            registry.emit("on_job_started", job=JOB)

    run_threads(emit_many)
    assert counter.count == THREADS * per_thread
    assert registry.stats()["async"]["on_job_started"].calls == THREADS * per_thread


def test_registering_while_other_threads_emit(registry: Registry) -> None:
    steady = Counter("steady")
    registry.register(steady)
    stop = threading.Event()
    emitted = [0] * THREADS
    errors: list[BaseException] = []

    def emit_until_stopped(index: int) -> None:
        try:
            while not stop.is_set():
                registry.emit("on_job_started", job=JOB)
                emitted[index] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=emit_until_stopped, args=(i,)) for i in range(THREADS - 1)]
    for thread in threads:
        thread.start()
    try:
        for round_ in range(200):
            transient = Counter(f"transient-{round_}")
            registry.register(transient)
            registry.unregister(transient.name)
    finally:
        stop.set()
        for thread in threads:
            thread.join()

    assert errors == []
    assert steady.count == sum(emitted)
    assert registry.stats()["steady"]["on_job_started"].calls == sum(emitted)
    assert [name for name, _ in registry.extensions()] == ["steady"]
