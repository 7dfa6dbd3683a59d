"""The store protocol: what the engine needs from a place that keeps jobs.

Two implementations ship: :class:`~dispatch_ext.engine.SQLiteStore` (durable, the
default) and :class:`~dispatch_ext.engine.MemoryStore` (for tests). Every method is a
coroutine called from the engine's event loop; a method returns once its change is
stored (for SQLite: committed).
"""

from __future__ import annotations

from collections.abc import Awaitable, Collection, Sequence
from typing import Protocol, runtime_checkable

from .records import DeadLetter, JobRecord, RunRecord

__all__ = ["Store"]


@runtime_checkable
class Store(Protocol):
    """Persistence for jobs, dead letters and workflow runs."""

    async def open(self) -> int:
        """Open (and create) the store; put jobs found ``running`` back in their queue.

        Returns the number of jobs put back.
        """

    async def close(self) -> None:
        """Write anything pending and release the store."""

    # jobs
    async def add_job(self, job: JobRecord) -> None:
        """Store a new job (state ``pending``)."""

    async def claim(self, names: Collection[str], limit: int, now: float) -> list[JobRecord]:
        """Mark up to ``limit`` due jobs ``running`` and return them, best first.

        Best is highest ``priority``, then earliest ``run_at``, then oldest. Only jobs
        whose name is in ``names`` are claimed.
        """

    async def release(self, jobs: Sequence[JobRecord]) -> None:
        """Put claimed jobs that did not run back in their queue, unchanged."""

    def complete(self, job: JobRecord) -> Awaitable[None]:
        """Store ``job`` as ``completed`` (``completed_at`` is set on the record).

        A plain method: the change is queued when called, and the returned awaitable
        says when it is stored. The engine awaits it only when a hook listens, so that
        completions without listeners share commits with the next writes.
        """

    async def retry(self, job: JobRecord) -> None:
        """Store ``job`` as ``retrying`` with its new ``run_at`` and ``retry_count``."""

    async def bury(self, job: JobRecord, error: str, error_type: str, traceback: str | None) -> int:
        """Store ``job`` as ``dead`` and add it to the dead-letter queue; return the entry id."""

    async def get_job(self, job_id: str) -> JobRecord | None:
        """The job with this id, or ``None``."""

    async def next_run_at(self, names: Collection[str]) -> float | None:
        """The earliest ``run_at`` of the waiting jobs named in ``names``."""

    async def count_active(self, names: Collection[str]) -> int:
        """How many jobs named in ``names`` are pending, running or retrying."""

    async def counts(self) -> dict[str, int]:
        """Number of jobs per state."""

    async def prune(self, before: float) -> int:
        """Delete completed jobs that completed before ``before``; return how many."""

    # dead-letter queue
    async def list_dead(self, limit: int, include_replayed: bool) -> list[DeadLetter]:
        """Dead-letter entries, newest first."""

    async def get_dead(self, entry_id: int) -> DeadLetter | None:
        """One dead-letter entry, or ``None``."""

    async def replay_dead(self, entry_id: int, job: JobRecord) -> None:
        """Store ``job`` (the replay) and mark the entry replayed, in one transaction."""

    # workflows
    async def add_run(self, run: RunRecord) -> None:
        """Store a new workflow run (state ``running``)."""

    async def finish_run(self, run: RunRecord) -> None:
        """Store the run's final state, output or error and ``completed_at``."""

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run with this id, or ``None``."""

    async def running_runs(self, names: Collection[str]) -> list[RunRecord]:
        """Runs still ``running`` (interrupted by a crash or a shutdown), oldest first."""

    async def save_step(self, run_id: str, step: str, result: str, elapsed: float) -> None:
        """Store a step's checkpoint (its JSON result)."""

    async def load_steps(self, run_id: str) -> dict[str, str]:
        """The checkpoints of a run: step name -> JSON result."""
