"""``Registry.has_async_listeners`` and the guarantee behind it: ``emit`` from async code
does what ``await aemit`` does when no implementation is async."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import sys
from collections.abc import Iterator

import pytest

from dispatch_ext import HOOK_NAMES, Job, Registry, UnknownHookError, hookimpl

if sys.version_info < (3, 11):
    from exceptiongroup import ExceptionGroup

JOB = Job(id="j1", name="send_email")
ELAPSED = dt.timedelta(seconds=1)


@pytest.fixture
def registry() -> Iterator[Registry]:
    registry = Registry(strict=False)
    yield registry
    registry.close()


class SyncListener:
    name = "sync"

    def on_job_completed(self, job: Job, elapsed: dt.timedelta) -> None:
        pass

    def on_job_started(self, job: Job) -> None:
        pass


class AsyncListener:
    name = "async"

    async def on_job_completed(self, job: Job) -> None:
        await asyncio.sleep(0)


class MarkedAsync:
    name = "marked"

    @hookimpl(specname="on_job_failed")
    async def record_failure(self, job: Job) -> None:
        pass


def test_no_listener_and_sync_listeners_are_not_async(registry: Registry) -> None:
    assert not any(registry.has_async_listeners(hook) for hook in HOOK_NAMES)
    registry.register(SyncListener())
    assert not any(registry.has_async_listeners(hook) for hook in HOOK_NAMES)


def test_an_async_implementation_makes_its_hook_async_and_only_it(registry: Registry) -> None:
    registry.register(SyncListener())
    registry.register(AsyncListener())
    registry.register(MarkedAsync())
    assert {h for h in HOOK_NAMES if registry.has_async_listeners(h)} == {
        "on_job_completed",
        "on_job_failed",
    }


def test_unregistering_the_async_implementation_makes_the_hook_sync_again(
    registry: Registry,
) -> None:
    registry.register(SyncListener())
    registry.register(AsyncListener())
    registry.unregister("async")
    assert not registry.has_async_listeners("on_job_completed")
    assert registry.has_listeners("on_job_completed")
    registry.register(AsyncListener())
    assert registry.has_async_listeners("on_job_completed")


def test_an_unknown_hook_is_refused_with_a_suggestion(registry: Registry) -> None:
    with pytest.raises(UnknownHookError, match="on_job_completed"):
        registry.has_async_listeners("on_job_complete")


class Recorder:
    def __init__(self, name: str, calls: list[str], fail: bool = False) -> None:
        self.name = name
        self.calls = calls
        self.fail = fail

    def on_job_completed(self, job: Job, elapsed: dt.timedelta) -> None:
        self.calls.append(self.name)
        if self.fail:
            raise RuntimeError(f"{self.name} broke")


class First:
    name = "first"

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    @hookimpl(tryfirst=True)
    def on_job_completed(self, job: Job) -> None:
        self.calls.append("first")


def emit_both_ways(
    strict: bool,
) -> list[tuple[list[str], list[str], dict[str, tuple[int, int]]]]:
    """Order, outcome and stats of ``emit`` and of ``await aemit`` on equal registries."""
    results = []
    for how in ("emit", "aemit"):
        calls: list[str] = []
        registry = Registry(strict=strict)
        registry.register(Recorder("a", calls))
        registry.register(Recorder("b", calls, fail=True))
        registry.register(Recorder("c", calls))
        registry.register(First(calls))
        assert not registry.has_async_listeners("on_job_completed")

        async def main(registry: Registry = registry, how: str = how) -> list[str]:
            outcomes = []
            for _ in range(3):
                try:
                    if how == "emit":
                        registry.emit("on_job_completed", job=JOB, elapsed=ELAPSED)
                    else:
                        await registry.aemit("on_job_completed", job=JOB, elapsed=ELAPSED)
                except ExceptionGroup as group:
                    outcomes.append(f"{group.message}: {[str(e) for e in group.exceptions]}")
                else:
                    outcomes.append("ok")
            return outcomes

        outcome = asyncio.run(main())
        stats = {
            name: (hooks["on_job_completed"].calls, hooks["on_job_completed"].errors)
            for name, hooks in registry.stats().items()
        }
        registry.close()
        results.append((calls, outcome, stats))
    return results


@pytest.mark.parametrize("strict", [False, True])
def test_emit_from_async_code_does_what_aemit_does(
    strict: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="dispatch_ext"):
        via_emit, via_aemit = emit_both_ways(strict)
    assert via_emit == via_aemit
    calls, outcomes, stats = via_emit
    assert calls == ["first", "a", "b", "c"] * 3
    assert stats == {"a": (3, 0), "b": (3, 3), "c": (3, 0), "first": (3, 0)}
    if strict:
        assert (
            outcomes
            == [
                "1 extension(s) failed in on_job_completed: in extension 'b', hook "
                "on_job_completed: ['b broke']"
            ]
            * 3
        )
    else:
        assert outcomes == ["ok"] * 3
    assert caplog.text.count("extension 'b' raised in on_job_completed") == 6
