"""Registry: isolation of failures, strict mode, stats, async implementations, timeouts."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sys
import time
from collections.abc import Iterator

import pytest

from dispatch_ext import HookTimeoutError, Job, Registry, hookimpl

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup

JOB = Job(id="j1", name="send_email")
ELAPSED = dt.timedelta(milliseconds=5)


@pytest.fixture
def registry() -> Iterator[Registry]:
    registry = Registry(strict=False)
    yield registry
    registry.close()


class Listener:
    def __init__(self, name: str, calls: list[str], error: Exception | None = None) -> None:
        self.name = name
        self.calls = calls
        self.error = error

    def on_job_completed(self, job: Job, elapsed: dt.timedelta) -> None:
        self.calls.append(self.name)
        if self.error is not None:
            raise self.error


class AsyncListener:
    def __init__(self, name: str, calls: list[str], delay: float = 0.01) -> None:
        self.name = name
        self.calls = calls
        self.delay = delay
        self.cancelled = False

    async def on_job_completed(self, job: Job, elapsed: dt.timedelta) -> None:
        self.calls.append(f"{self.name}:start")
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        self.calls.append(f"{self.name}:end")


def three_with_a_failing_middle(registry: Registry, calls: list[str]) -> None:
    registry.register(Listener("a", calls))
    registry.register(Listener("b", calls, RuntimeError("b is broken")))
    registry.register(Listener("c", calls))


# -- isolation --------------------------------------------------------------------------


def test_a_failing_implementation_does_not_stop_the_others(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []
    three_with_a_failing_middle(registry, calls)

    with caplog.at_level(logging.ERROR, logger="dispatch_ext"):
        registry.emit("on_job_completed", job=JOB, elapsed=ELAPSED)  # does not raise

    assert calls == ["a", "b", "c"]
    [record] = [r for r in caplog.records if r.name == "dispatch_ext"]
    assert record.levelno == logging.ERROR
    message = record.getMessage()
    assert "'b'" in message
    assert "on_job_completed" in message
    assert "RuntimeError: b is broken" in message
    assert record.exc_info is not None  # the traceback is logged too

    stats = registry.stats()
    assert stats["b"]["on_job_completed"].calls == 1
    assert stats["b"]["on_job_completed"].errors == 1
    assert stats["a"]["on_job_completed"].errors == 0
    assert stats["c"]["on_job_completed"].errors == 0


def test_stats_count_calls_and_errors_over_many_emits(registry: Registry) -> None:
    calls: list[str] = []
    three_with_a_failing_middle(registry, calls)
    logging.getLogger("dispatch_ext").disabled = True
    try:
        for _ in range(200):
            registry.emit("on_job_completed", job=JOB, elapsed=ELAPSED)
    finally:
        logging.getLogger("dispatch_ext").disabled = False
    stats = registry.stats()
    assert {name: s["on_job_completed"].calls for name, s in stats.items()} == {
        "a": 200,
        "b": 200,
        "c": 200,
    }
    assert stats["b"]["on_job_completed"].errors == 200
    assert all(s["on_job_completed"].seconds >= 0 for s in stats.values())
    assert stats["a"]["on_job_completed"].seconds > 0  # the sampled calls were timed


def test_aemit_isolates_failures_too(registry: Registry, caplog: pytest.LogCaptureFixture) -> None:
    async def scenario() -> None:
        calls: list[str] = []
        three_with_a_failing_middle(registry, calls)
        await registry.aemit("on_job_completed", job=JOB, elapsed=ELAPSED)
        assert calls == ["a", "b", "c"]
        assert "extension 'b' raised in on_job_completed" in caplog.text

    asyncio.run(scenario())


# -- strict mode ------------------------------------------------------------------------


def test_strict_mode_raises_an_exception_group_after_all_ran() -> None:
    calls: list[str] = []
    registry = Registry(strict=True)
    three_with_a_failing_middle(registry, calls)
    registry.register(Listener("d", calls, ValueError("d is broken too")))

    with pytest.raises(ExceptionGroup) as caught:
        registry.emit("on_job_completed", job=JOB, elapsed=ELAPSED)

    assert calls == ["a", "b", "c", "d"]
    group = caught.value
    assert [type(e) for e in group.exceptions] == [RuntimeError, ValueError]
    assert "2 extension(s) failed in on_job_completed" in str(group)
    assert "'b'" in str(group)
    assert "'d'" in str(group)
    assert registry.stats()["b"]["on_job_completed"].errors == 1


def test_strict_mode_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPATCH_EXT_STRICT", "1")
    calls: list[str] = []
    registry = Registry()
    assert registry.strict is True
    three_with_a_failing_middle(registry, calls)
    with pytest.raises(ExceptionGroup):
        registry.emit("on_job_completed", job=JOB, elapsed=ELAPSED)
    assert calls == ["a", "b", "c"]


def test_an_explicit_argument_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISPATCH_EXT_STRICT", "1")
    assert Registry(strict=False).strict is False
    monkeypatch.setenv("DISPATCH_EXT_STRICT", "0")
    assert Registry().strict is False


def test_strict_mode_in_aemit() -> None:
    async def scenario() -> None:
        calls: list[str] = []
        registry = Registry(strict=True)
        three_with_a_failing_middle(registry, calls)
        with pytest.raises(ExceptionGroup) as caught:
            await registry.aemit("on_job_completed", job=JOB, elapsed=ELAPSED)
        assert calls == ["a", "b", "c"]
        assert [type(e) for e in caught.value.exceptions] == [RuntimeError]

    asyncio.run(scenario())


# -- async implementations --------------------------------------------------------------


def test_emit_runs_an_async_implementation_to_completion(registry: Registry) -> None:
    calls: list[str] = []
    registry.register(Listener("before", calls))
    registry.register(AsyncListener("async", calls))
    registry.register(Listener("after", calls))

    registry.emit("on_job_completed", job=JOB, elapsed=ELAPSED)

    # finished before the next implementation ran, and before emit returned; an
    # un-awaited coroutine would fail this test with a RuntimeWarning (-W error)
    assert calls == ["before", "async:start", "async:end", "after"]


def test_aemit_awaits_async_implementations_in_order(registry: Registry) -> None:
    async def scenario() -> None:
        calls: list[str] = []
        registry.register(AsyncListener("first", calls))
        registry.register(Listener("sync", calls))
        registry.register(AsyncListener("second", calls))

        await registry.aemit("on_job_completed", job=JOB, elapsed=ELAPSED)

        assert calls == ["first:start", "first:end", "sync", "second:start", "second:end"]

    asyncio.run(scenario())


def test_emit_from_inside_a_running_loop_still_completes(registry: Registry) -> None:
    async def scenario() -> None:
        # sync code called from async code (a sync handler in an async app) may use emit()
        calls: list[str] = []
        registry.register(AsyncListener("async", calls))
        registry.emit("on_job_completed", job=JOB, elapsed=ELAPSED)
        assert calls == ["async:start", "async:end"]

    asyncio.run(scenario())


def test_emit_from_an_async_hook_says_to_use_aemit(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    class Reentrant:
        async def on_job_started(self, job: Job) -> None:
            registry.emit("on_shutdown")  # would deadlock the loop thread; refused

        async def on_shutdown(self) -> None:
            pass

    registry.register(Reentrant())
    registry.emit("on_job_started", job=JOB)
    assert "use 'await registry.aemit(...)'" in caplog.text


def test_an_async_implementation_error_is_isolated(
    registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    class AsyncBroken:
        async def on_job_completed(self) -> None:
            await asyncio.sleep(0)
            raise KeyError("missing")

    registry.register(AsyncBroken())
    registry.register(Listener("after", calls))
    registry.emit("on_job_completed", job=JOB, elapsed=ELAPSED)
    assert calls == ["after"]
    assert "extension 'AsyncBroken' raised in on_job_completed: KeyError" in caplog.text
    assert registry.stats()["AsyncBroken"]["on_job_completed"].errors == 1


# -- timeouts ---------------------------------------------------------------------------


def test_a_hanging_async_implementation_is_cut_off_from_emit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = Registry(timeout=0.2)
    calls: list[str] = []
    hanging = AsyncListener("hangs", calls, delay=3600)
    registry.register(hanging)
    registry.register(Listener("next", calls))

    registry.emit("on_job_completed", job=JOB, elapsed=ELAPSED)

    assert calls == ["hangs:start", "next"]
    assert hanging.cancelled  # cancelled, not left running in the background
    assert "extension 'hangs' timed out in on_job_completed" in caplog.text
    stats = registry.stats()["hangs"]["on_job_completed"]
    assert (stats.errors, stats.timeouts) == (1, 1)
    registry.close()


def test_a_hanging_async_implementation_is_cut_off_from_aemit(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        registry = Registry(timeout=0.2)
        calls: list[str] = []
        hanging = AsyncListener("hangs", calls, delay=3600)
        registry.register(hanging)
        registry.register(AsyncListener("next", calls))

        await registry.aemit("on_job_completed", job=JOB, elapsed=ELAPSED)

        assert calls == ["hangs:start", "next:start", "next:end"]
        assert hanging.cancelled
        assert registry.stats()["hangs"]["on_job_completed"].timeouts == 1

    asyncio.run(scenario())


def test_a_timeout_raises_hook_timeout_error_in_strict_mode() -> None:
    registry = Registry(strict=True, timeout=0.1)
    registry.register(AsyncListener("hangs", [], delay=3600))
    with pytest.raises(ExceptionGroup) as caught:
        registry.emit("on_job_completed", job=JOB, elapsed=ELAPSED)
    [error] = caught.value.exceptions
    assert isinstance(error, HookTimeoutError)
    assert isinstance(error, TimeoutError)
    assert "0.1 s" in str(error)
    registry.close()


@pytest.mark.parametrize("how", ["attribute", "argument"])
def test_timeout_per_extension(how: str) -> None:
    # The registry's default would hang the test for a minute; each extension's own
    # timeout cuts it off.
    registry = Registry(timeout=60)
    calls: list[str] = []
    hanging = AsyncListener("hangs", calls, delay=3600)
    patient = AsyncListener("patient", calls, delay=0.3)
    if how == "attribute":
        hanging.hook_timeout = 0.1  # type: ignore[attr-defined]
        registry.register(hanging)
    else:
        registry.register(hanging, timeout=0.1)
    registry.register(patient, timeout=30)

    started = time.monotonic()
    registry.emit("on_job_completed", job=JOB, elapsed=ELAPSED)
    took = time.monotonic() - started

    assert hanging.cancelled
    assert calls == ["hangs:start", "patient:start", "patient:end"]
    assert took < 30  # far below the 60 s default: the extension's own timeout applied
    assert registry.stats()["hangs"]["on_job_completed"].timeouts == 1
    assert registry.stats()["patient"]["on_job_completed"].timeouts == 0
    registry.close()


def test_async_hooks_keep_working_after_close(registry: Registry) -> None:
    calls: list[str] = []
    registry.register(AsyncListener("async", calls))
    registry.emit("on_job_completed", job=JOB, elapsed=ELAPSED)
    registry.close()
    registry.emit("on_job_completed", job=JOB, elapsed=ELAPSED)
    assert calls == ["async:start", "async:end"] * 2


def test_async_marked_implementation_with_tryfirst(registry: Registry) -> None:
    calls: list[str] = []

    class Early:
        @hookimpl(tryfirst=True)
        async def on_job_completed(self) -> None:
            calls.append("early")

    registry.register(Listener("plain", calls))
    registry.register(Early())
    registry.emit("on_job_completed", job=JOB, elapsed=ELAPSED)
    assert calls == ["early", "plain"]
