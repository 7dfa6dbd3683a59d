"""How much ``Registry.emit`` costs, as ratios against hand-written baselines.

Measured in one run, on the same data, so the ratios hold on any machine:

(a) ``emit`` to 5 sync listeners  vs  a hand-written loop of 5 try/except-guarded calls
    (target: at most 1.5x);
(b) ``emit`` of a hook nobody implements  vs  calling an empty function with the same
    keyword arguments (target: at most 2x), both ``def empty(job, elapsed)`` and
    ``def empty(**kwargs)``; and vs an empty method with ``emit``'s own signature
    ``(self, hook, /, **kwargs)``, the floor any such ``emit`` pays for its call;
(c) for information: pluggy's own ``pm.hook.on_job_completed(...)`` with the same 5
    listeners (it runs them in reverse order and stops at the first exception).

Every candidate is timed with :mod:`timeit`, repeats interleaved, and the best repeat
kept (the least disturbed by the rest of the machine). ``--quick`` runs a short smoke test.

    python benchmarks/bench_registry.py [--quick]
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import timeit
from collections.abc import Callable
from typing import Any

import pluggy

from dispatch_ext import Job, Registry, hookimpl, hookspecs
from dispatch_ext.markers import PROJECT_NAME

LISTENERS = 5
log = logging.getLogger("bench")


class Listener:
    """A sync extension that does nothing, so that only the dispatch is measured."""

    def __init__(self, index: int) -> None:
        self.name = f"listener-{index}"

    def on_job_completed(self, job: Job, elapsed: dt.timedelta) -> None:
        pass


class PluggyListener:
    @hookimpl
    def on_job_completed(self, job: Job, elapsed: dt.timedelta) -> None:
        pass


def empty(job: Job, elapsed: dt.timedelta) -> None:
    pass


def empty_kwargs(**kwargs: Any) -> None:
    pass


class Floor:
    """An empty method with emit's own signature: what any ``emit(hook, **kwargs)`` costs."""

    def emit(self, hook: str, /, **kwargs: Any) -> None:
        pass


def build() -> dict[str, Any]:
    job = Job(id="j1", name="send_email")
    elapsed = dt.timedelta(milliseconds=3)

    registry = Registry(strict=False)
    for index in range(LISTENERS):
        registry.register(Listener(index))

    functions = tuple(Listener(index).on_job_completed for index in range(LISTENERS))

    def guarded_loop(**kwargs: Any) -> None:
        # What one would write by hand: every call guarded so that one failure does not
        # stop the others.
        for function in functions:
            try:
                function(**kwargs)
            except Exception:
                log.exception("listener failed")

    pm = pluggy.PluginManager(PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    for _ in range(LISTENERS):
        pm.register(PluggyListener())

    return {
        "job": job,
        "elapsed": elapsed,
        "emit": registry.emit,
        "guarded_loop": guarded_loop,
        "empty": empty,
        "empty_kwargs": empty_kwargs,
        "floor": Floor().emit,
        "pluggy_hook": pm.hook.on_job_completed,
    }


CANDIDATES = {
    "emit_5": "emit('on_job_completed', job=job, elapsed=elapsed)",
    "loop_5": "guarded_loop(job=job, elapsed=elapsed)",
    "emit_0": "emit('on_workflow_completed', run=job, elapsed=elapsed)",
    "empty": "empty(job=job, elapsed=elapsed)",
    "empty_kwargs": "empty_kwargs(job=job, elapsed=elapsed)",
    "floor": "floor('on_workflow_completed', run=job, elapsed=elapsed)",
    "pluggy_5": "pluggy_hook(job=job, elapsed=elapsed)",
}


def measure(number: int, repeat: int) -> dict[str, float]:
    """Best seconds per call of each candidate; repeats interleaved across candidates."""
    namespace = build()
    timers = {name: timeit.Timer(stmt, globals=namespace) for name, stmt in CANDIDATES.items()}
    for timer in timers.values():  # warm up
        timer.timeit(max(1, number // 10))
    best = dict.fromkeys(timers, float("inf"))
    for _ in range(repeat):
        for name, timer in timers.items():
            best[name] = min(best[name], timer.timeit(number) / number)
    return best


def report(best: dict[str, float], out: Callable[[str], None] = print) -> None:
    def ns(name: str) -> str:
        return f"{best[name] * 1e9:7.0f} ns"

    def ratio(name: str, baseline: str) -> float:
        return best[name] / best[baseline]

    def verdict(value: float, target: float) -> str:
        return f"target <= {target}x: {'met' if value <= target else 'NOT MET'}"

    a = ratio("emit_5", "loop_5")
    b = ratio("emit_0", "empty")
    out(f"Python {sys.version.split()[0]}, pluggy {pluggy.__version__}")
    out("")
    out(f"(a) emit to {LISTENERS} sync listeners")
    out(f"    emit('on_job_completed', ...)                 {ns('emit_5')}")
    out(f"    baseline: hand-written loop of {LISTENERS} guarded calls {ns('loop_5')}")
    out(f"    ratio emit / guarded loop = {a:.2f}x   ({verdict(a, 1.5)})")
    out("")
    b_kwargs = ratio("emit_0", "empty_kwargs")
    out("(b) emit of a hook nobody implements")
    out(f"    emit('on_workflow_completed', ...)            {ns('emit_0')}")
    out(f"    baseline: def empty(job, elapsed)             {ns('empty')}")
    out(f"    baseline: def empty(**kwargs)                 {ns('empty_kwargs')}")
    out(f"    floor: an empty method (self, hook, /, **kw)  {ns('floor')}")
    out(f"    ratio emit / empty(job, elapsed) = {b:.2f}x   ({verdict(b, 2.0)})")
    out(f"    ratio emit / empty(**kwargs)     = {b_kwargs:.2f}x   ({verdict(b_kwargs, 2.0)})")
    out(
        f"    ratio emit / floor = {ratio('emit_0', 'floor'):.2f}x; "
        f"floor / empty(job, elapsed) = {ratio('floor', 'empty'):.2f}x"
    )
    out("")
    out(f"(c) for information: pluggy pm.hook.on_job_completed with {LISTENERS} listeners")
    out(f"    pm.hook.on_job_completed(...)                 {ns('pluggy_5')}")
    out(
        f"    ratio pluggy / guarded loop = {ratio('pluggy_5', 'loop_5'):.2f}x, "
        f"pluggy / emit = {ratio('pluggy_5', 'emit_5'):.2f}x"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run for CI")
    args = parser.parse_args(argv)
    number, repeat = (20_000, 3) if args.quick else (200_000, 9)
    print(f"bench_registry: best of {repeat} x {number:,} calls per candidate")
    report(measure(number, repeat))
    return 0


if __name__ == "__main__":
    sys.exit(main())
