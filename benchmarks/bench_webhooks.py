"""Does a slow webhook receiver slow jobs down? Job throughput, slow vs fast receiver.

What runs: N no-op jobs on the embedded engine (``SQLiteStore`` in a temporary directory,
two workers, one producer awaiting each ``enqueue``), with the webhooks extension sending
every event (3 per job: enqueued, started, completed) to a local receiver in its own
process. Throughput is timed from the first enqueue until ``drain()`` returns (every job
completed); the engine's shutdown, where the extension drains its outbox up to its
deadline, is not part of it.

* ``fast receiver``: answers at once.
* ``slow receiver``: takes 2 s per request (so it sees one request per 2 s).
* ``no webhooks``: the same run with no extension, for information.

The ratio to read is ``slow / fast``: hooks only append to the outbox, so a receiver's
speed should not show in job throughput (target: at least 0.95x). Configurations run
interleaved, ``--rounds`` times each; medians are reported.

    python benchmarks/bench_webhooks.py            # 2,000 jobs, 3 rounds
    python benchmarks/bench_webhooks.py --quick    # 2,000 jobs, 1 round
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dispatch_ext_webhooks import WebhookExtension, generate_secret

from dispatch_ext.config import Config
from dispatch_ext.engine import Engine, SQLiteStore

TARGET = 0.95
SLOW_SECONDS = 2.0


@contextmanager
def receiver(delay: float) -> Iterator[str]:
    """A local receiver in a process of its own (so it takes no time from the engine's)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "dispatch_ext_webhooks.receiver", "--delay", str(delay)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        yield str(json.loads(process.stdout.readline())["url"])
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def run(n: int, folder: Path, url: str | None, secret: str) -> tuple[float, int]:
    """Seconds for ``n`` jobs, and the messages delivered by then."""
    extensions: list[object] = []
    hooks: WebhookExtension | None = None
    if url is not None:
        hooks = WebhookExtension(
            url=url, secret=secret, outbox_path=folder / "outbox.sqlite3", shutdown_timeout=0.2
        )
        extensions.append(hooks)
    engine = Engine(
        store=SQLiteStore(folder / "engine.sqlite3"),
        extensions=extensions,
        autoload=False,
        concurrency=2,
        config=Config(autoload=False),
    )

    @engine.job("noop")
    def noop(payload: Any) -> None:
        pass

    async def main() -> tuple[float, int]:
        async with engine:
            began = time.perf_counter()
            for i in range(n):
                await engine.enqueue("noop", i)
            await engine.drain()
            elapsed = time.perf_counter() - began
            delivered = 0 if hooks is None else hooks.stats.delivered
            counts = await engine.counts()
        if counts["completed"] != n:
            raise RuntimeError(f"the engine completed {counts['completed']} of {n} jobs")
        return elapsed, delivered

    return asyncio.run(main())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=2_000, help="jobs per run")
    parser.add_argument("--rounds", type=int, default=3, help="runs per configuration")
    parser.add_argument("--quick", action="store_true", help="one round only")
    parser.add_argument("--check", action="store_true", help="exit 1 when the target is missed")
    args = parser.parse_args(argv)
    n, rounds = args.jobs, (1 if args.quick else args.rounds)
    secret = generate_secret()
    # A sender still waiting on the slow receiver when it is stopped logs a retry: noise here.
    logging.getLogger("dispatch_ext_webhooks").setLevel(logging.ERROR)

    with receiver(0.0) as fast_url, receiver(SLOW_SECONDS) as slow_url:
        runs: dict[str, Callable[[Path], tuple[float, int]]] = {
            "fast receiver": lambda folder: run(n, folder, fast_url, secret),
            "slow receiver": lambda folder: run(n, folder, slow_url, secret),
            "no webhooks": lambda folder: run(n, folder, None, secret),
        }
        rates: dict[str, list[float]] = {name: [] for name in runs}
        delivered: dict[str, list[int]] = {name: [] for name in runs}
        for _ in range(rounds):
            for name, fn in runs.items():
                with tempfile.TemporaryDirectory(prefix="dispatch-bench-webhooks-") as tmp:
                    gc.collect()
                    seconds, sent = fn(Path(tmp))
                rates[name].append(n / seconds)
                delivered[name].append(sent)

    median = {name: statistics.median(values) for name, values in rates.items()}
    print(f"{n:,} no-op jobs ({3 * n:,} webhook events), 2 workers, median of {rounds} run(s)")
    print(f"python {sys.version.split()[0]}, sqlite {__import__('sqlite3').sqlite_version}")
    print()
    for name, rate in median.items():
        sent = statistics.median(delivered[name])
        tail = "" if name == "no webhooks" else f"   {sent:>6,.0f} delivered by the end of the run"
        print(f"  {name:<14} {rate:>8,.0f} jobs/s{tail}")
    print()
    ratio = median["slow receiver"] / median["fast receiver"]
    hooks_only = median["slow receiver"] / median["no webhooks"]
    with_delivery = median["fast receiver"] / median["no webhooks"]
    slow = f"slow receiver ({SLOW_SECONDS:g} s/request)"
    lines = [
        (f"{slow} / fast receiver", ratio, f"target >= {TARGET}x"),
        (f"{slow} / no webhooks", hooks_only, "what the hooks' outbox appends cost"),
        ("fast receiver / no webhooks", with_delivery, "appends and deliveries during the run"),
    ]
    width = max(len(label) for label, _, _ in lines) + 1
    for label, value, note in lines:
        print(f"{label + ':':<{width}} {value:.2f}x  ({note})")
    return 1 if args.check and ratio < TARGET else 0


if __name__ == "__main__":
    raise SystemExit(main())
