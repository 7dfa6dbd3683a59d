"""Short sync jobs run back to back on one thread: one thread hop serves several jobs.

Handing a job to a thread and getting the result back costs more than a no-op handler
itself. When a sync handler has proved short (under a millisecond on average), a worker
hands a few queued jobs of that handler to its thread at once; ``on_job_started`` fires
for each of them just before, since each starts within a millisecond or so of the one
before it. The thread records which job runs and since when, so that the per-job timeout
still applies to each job; jobs of a batch that a timeout kept from running then run one
by one.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["Batch", "run_batch"]


class Batch:
    """Progress of one batch, shared by the thread running it and the event loop."""

    __slots__ = ("began", "cancelled", "index", "lock", "results")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cancelled = False
        self.index = -1  # the job running now (or last started)
        self.began = 0.0  # when it started, on the loop's clock
        self.results: list[tuple[Exception | None, float, Any]] = []


def run_batch(
    fn: Callable[[Any], Any], payloads: list[Any], batch: Batch, clock: Callable[[], float]
) -> None:
    """Run ``fn`` on each payload in turn until done or cancelled (on a worker thread).

    Each result is ``(error or None, seconds, return value)``.
    """
    perf = time.perf_counter
    for index, payload in enumerate(payloads):
        with batch.lock:
            if batch.cancelled:
                return
            batch.index = index
            batch.began = clock()
        started = perf()
        try:
            value = fn(payload)
        except Exception as exc:
            outcome: tuple[Exception | None, float, Any] = (exc, perf() - started, None)
        else:
            outcome = (None, perf() - started, value)
        with batch.lock:
            batch.results.append(outcome)
