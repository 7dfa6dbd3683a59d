"""Throughput of the embedded engine against Huey's SqliteHuey, measured in the same run.

What runs: N no-op jobs through a SQLite file in a temporary directory, end to end
(enqueue all N, then process them with two workers), timed from the first enqueue to the
last completion.

* ``huey``: ``SqliteHuey(fsync=False)`` (WAL, no fsync per commit: like the engine's WAL
  with ``synchronous=NORMAL``, a commit survives ``kill -9``), a sync no-op task, one
  producer enqueueing one task at a time, then Huey's consumer in this process with two
  worker threads.
* ``engine``: ``Engine(concurrency=2)`` on ``SQLiteStore``, a sync no-op handler (run in
  worker threads, as Huey's), the same single producer awaiting each ``enqueue``
  (one commit each), then the workers until ``drain()`` returns.
* ``engine, gathered enqueue``: the same, the N enqueues awaited together (concurrent
  producers share commits).
* ``engine, async handler``: an ``async def`` no-op (no thread hop).
* ``engine + listener``: one extension listening on every hook (it counts).
* ``engine + audit + listener``: the same plus the audit extension writing its JSON
  lines to a file; both against the engine run without extensions.

Each configuration runs ``--rounds`` times, interleaved; the median is reported, and the
ratios are what to read (absolute figures depend on the machine).

    python benchmarks/bench_engine.py            # 20,000 jobs, 3 rounds
    python benchmarks/bench_engine.py --quick    # CI smoke: 2,000 jobs, 1 round
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import gc
import signal
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dispatch_ext import CronEntry, Job, WorkflowRun
from dispatch_ext.config import Config
from dispatch_ext.engine import Engine, SQLiteStore

TARGET_VS_HUEY = 1.5
TARGET_WITH_EXTENSIONS = 0.9


class EveryHook:
    """A listener on all 13 hooks that counts what it hears."""

    name = "every-hook"

    def __init__(self) -> None:
        self.count = 0

    def on_job_enqueued(self, job: Job) -> None:
        self.count += 1

    def on_job_started(self, job: Job) -> None:
        self.count += 1

    def on_job_completed(self, job: Job, elapsed: dt.timedelta) -> None:
        self.count += 1

    def on_job_failed(self, job: Job, error: BaseException) -> None:
        self.count += 1

    def on_job_retrying(self, job: Job, attempt: int) -> None:
        self.count += 1

    def on_job_dlq(self, job: Job) -> None:
        self.count += 1

    def on_workflow_started(self, run: WorkflowRun) -> None:
        self.count += 1

    def on_workflow_step_completed(self, run: WorkflowRun, step: str) -> None:
        self.count += 1

    def on_workflow_step_failed(self, run: WorkflowRun, step: str) -> None:
        self.count += 1

    def on_workflow_completed(self, run: WorkflowRun) -> None:
        self.count += 1

    def on_workflow_failed(self, run: WorkflowRun) -> None:
        self.count += 1

    def on_cron_fired(self, entry: CronEntry, job: Job) -> None:
        self.count += 1

    def on_shutdown(self) -> None:
        self.count += 1


def audit_extension(folder: Path) -> tuple[object, str]:
    """The audit extension writing to a file, or a stand-in when it is not installed."""
    try:
        from dispatch_ext_audit import AuditExtension
    except ImportError:
        return EveryHook(), "audit not installed: a second every-hook listener stands in"
    return AuditExtension(path=folder / "audit.jsonl"), "dispatch_ext_audit.AuditExtension"


# -- the runs -------------------------------------------------------------------------


def run_huey(n: int, folder: Path) -> float:
    from huey import SqliteHuey

    huey = SqliteHuey("bench", filename=str(folder / "huey.sqlite3"), fsync=False, results=False)
    done = threading.Event()
    lock = threading.Lock()
    count = 0

    @huey.task()
    def noop(i: int) -> None:
        nonlocal count
        with lock:
            count += 1
            if count == n:
                done.set()

    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    began = time.perf_counter()
    for i in range(n):
        noop(i)
    consumer = huey.create_consumer(
        workers=2,
        worker_type="thread",
        periodic=False,
        initial_delay=0.001,
        max_delay=0.01,
        check_worker_health=False,
    )
    consumer.start()
    finished = done.wait(600)
    elapsed = time.perf_counter() - began
    consumer.stop(graceful=True)
    for sig, handler in saved.items():
        signal.signal(sig, handler)
    huey.storage.close()
    if not finished:
        raise RuntimeError(f"huey processed {count} of {n} jobs")
    return elapsed


def run_engine(
    n: int,
    folder: Path,
    *,
    extensions: tuple[object, ...] = (),
    handler: str = "sync",
    gathered: bool = False,
) -> float:
    engine = Engine(
        store=SQLiteStore(folder / "engine.sqlite3"),
        extensions=extensions,
        autoload=False,
        concurrency=2,
        config=Config(autoload=False),
    )
    if handler == "sync":

        @engine.job("noop")
        def noop(payload: Any) -> None:
            pass

    else:

        @engine.job("noop")
        async def anoop(payload: Any) -> None:
            pass

    async def main() -> float:
        began = time.perf_counter()
        if gathered:
            await asyncio.gather(*(engine.enqueue("noop", i) for i in range(n)))
        else:
            for i in range(n):
                await engine.enqueue("noop", i)
        async with engine:
            await engine.drain()
            elapsed = time.perf_counter() - began
            counts = await engine.counts()
        if counts["completed"] != n:
            raise RuntimeError(f"the engine completed {counts['completed']} of {n} jobs")
        return elapsed

    return asyncio.run(main())


def measure(runs: dict[str, Callable[[Path], float]], rounds: int, n: int) -> dict[str, float]:
    """Jobs per second (median over ``rounds``) of each run, interleaved."""
    results: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            with tempfile.TemporaryDirectory(prefix="dispatch-bench-") as tmp:
                gc.collect()
                results[name].append(n / fn(Path(tmp)))
    return {name: statistics.median(values) for name, values in results.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000, help="jobs per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per configuration")
    parser.add_argument("--quick", action="store_true", help="CI smoke: 2,000 jobs, 1 round")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target ratio is missed")
    args = parser.parse_args(argv)
    n, rounds = (2_000, 1) if args.quick else (args.jobs, args.rounds)

    with tempfile.TemporaryDirectory(prefix="dispatch-bench-audit-") as audit_dir:
        audit, audit_label = audit_extension(Path(audit_dir))
        listener = EveryHook()
        runs: dict[str, Callable[[Path], float]] = {
            "huey": lambda folder: run_huey(n, folder),
            "engine": lambda folder: run_engine(n, folder),
            "engine, gathered enqueue": lambda folder: run_engine(n, folder, gathered=True),
            "engine, async handler": lambda folder: run_engine(n, folder, handler="async"),
            "engine + listener": lambda folder: run_engine(n, folder, extensions=(listener,)),
            "engine + audit + listener": lambda folder: run_engine(
                n, folder, extensions=(audit, listener)
            ),
        }
        rates = measure(runs, rounds, n)

    print(f"{n:,} no-op jobs, enqueue then process with 2 workers, median of {rounds} run(s)")
    print(f"python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}")
    print(f"listener: one extension on all 13 hooks; audit: {audit_label}")
    print()
    width = max(map(len, rates))
    for name, rate in rates.items():
        print(f"  {name:<{width}}  {rate:>9,.0f} jobs/s")
    print()
    engine = rates["engine"]
    with_ext = rates["engine + audit + listener"]
    ratios = [
        ("engine / huey (SqliteHuey fsync=False)", engine / rates["huey"], TARGET_VS_HUEY),
        ("engine, gathered enqueue / huey", rates["engine, gathered enqueue"] / rates["huey"], 0),
        ("engine, async handler / huey", rates["engine, async handler"] / rates["huey"], 0),
        ("engine + listener / engine", rates["engine + listener"] / engine, 0),
        ("engine + audit + listener / engine", with_ext / engine, TARGET_WITH_EXTENSIONS),
        ("engine + audit + listener / huey", with_ext / rates["huey"], 0),
    ]
    width = max(len(label) for label, _, _ in ratios)
    for label, ratio, target in ratios:
        goal = f"  (target >= {target}x)" if target else ""
        print(f"  {label:<{width}}  {ratio:5.2f}x{goal}")
    print()
    print(
        f"hooks cost {(1 / with_ext - 1 / engine) * 1e6:.0f} us per job with audit + listener "
        f"(3 events: enqueued, started, completed), "
        f"{(1 / rates['engine + listener'] - 1 / engine) * 1e6:.0f} us with the listener alone"
    )
    missed = engine / rates["huey"] < TARGET_VS_HUEY or with_ext / engine < TARGET_WITH_EXTENSIONS
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    raise SystemExit(main())
