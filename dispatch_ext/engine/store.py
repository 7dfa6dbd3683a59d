"""The store protocol: what the engine needs from a place that keeps jobs.

Two implementations ship: :class:`~dispatch_ext.engine.SQLiteStore` (durable, the
default) and :class:`~dispatch_ext.engine.MemoryStore` (for tests). Every method is a
coroutine called from the engine's event loop; a method returns once its change is
stored (for SQLite: committed).

Several engines (processes) may share one store: each started engine is a *worker*
that claims jobs and workflow runs under its id and keeps a heartbeat (see
:mod:`dispatch_ext.engine.lease`); only :meth:`Store.beat` puts work back, and only
the work of workers that are gone.

The writes that end an attempt (:meth:`Store.complete`, :meth:`Store.retry`,
:meth:`Store.bury`, :meth:`Store.save_step`, :meth:`Store.finish_run`) are *fenced*:
each applies only while its job (or run) is still ``running`` under the claim it was
made for (the same worker ``owner`` and, for jobs, the same ``started_at`` set by the
claim; for runs, the same claim count), checked in the same statement, and says whether
it applied. A worker that lost its lease therefore cannot overwrite the work of the
worker that took over.
"""

from __future__ import annotations

from collections.abc import Awaitable, Collection, Sequence
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from .records import DeadLetter, JobRecord, RunRecord

if TYPE_CHECKING:
    from .lease import Recovery, WorkerIdentity

__all__ = ["Store"]


@runtime_checkable
class Store(Protocol):
    """Persistence for jobs, dead letters and workflow runs."""

    async def open(self) -> None:
        """Open (and create) the store. Nothing is recovered here: see :meth:`beat`."""

    async def close(self) -> None:
        """Write anything pending and release the store."""

    # jobs
    async def add_job(self, job: JobRecord) -> None:
        """Store a new job (state ``pending``)."""

    async def claim(
        self, names: Collection[str], limit: int, now: float, owner: str | None = None
    ) -> list[JobRecord]:
        """Mark up to ``limit`` due jobs ``running`` (held by worker ``owner``) and
        return them, best first.

        Best is highest ``priority``, then earliest ``run_at``, then oldest. Only jobs
        whose name is in ``names`` are claimed.
        """

    async def release(self, jobs: Sequence[JobRecord], owner: str) -> None:
        """Put claimed jobs that did not run back in their queue, unchanged (those that
        ``owner`` still holds)."""

    def complete(self, job: JobRecord, owner: str) -> Awaitable[bool]:
        """Store ``job`` as ``completed`` (``completed_at`` is set on the record), if
        ``owner`` still holds it; the awaitable gives whether it did (fenced).

        A plain method: the change is queued when called, and the returned awaitable
        says when it is stored. The engine awaits it only when a hook listens, so that
        completions without listeners share commits with the next writes.
        """

    async def retry(self, job: JobRecord, owner: str) -> bool:
        """Store ``job`` as ``retrying`` with its new ``run_at`` and ``retry_count``, if
        ``owner`` still holds it (``job.started_at`` is still the claim's); return
        whether it did (fenced)."""

    async def bury(
        self, job: JobRecord, error: str, error_type: str, traceback: str | None, owner: str
    ) -> int | None:
        """Store ``job`` as ``dead`` and add it to the dead-letter queue, if ``owner``
        still holds it; return the entry id, or ``None`` when fenced off."""

    async def get_job(self, job_id: str) -> JobRecord | None:
        """The job with this id, or ``None``."""

    async def next_run_at(self, names: Collection[str]) -> float | None:
        """The earliest ``run_at`` of the waiting jobs named in ``names``."""

    async def waiting_names(self, before: float) -> list[str]:
        """The names of the jobs waiting (pending or retrying) since before ``before``."""

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

    # workers
    async def beat(self, worker: WorkerIdentity, lease_timeout: float, now: float) -> Recovery:
        """Register ``worker`` or refresh its heartbeat, and recover the work of gone
        workers, in one transaction.

        ``lease_timeout`` is stored with the worker: each worker is judged by its own.
        Gone: no heartbeat for its ``lease_timeout`` seconds, or (same process table) a
        process that has exited (:func:`dispatch_ext.engine.lease.gone_reason`). Their
        rows are removed, their ``running`` jobs go back to the queue and their workflow
        runs become free to claim; so do ``running`` jobs and runs held by no registered
        worker.
        """

    async def leave(self, worker_id: str) -> None:
        """Put back the jobs ``worker_id`` still holds, free its runs, remove its row."""

    # workflows
    async def add_run(self, run: RunRecord, owner: str | None = None) -> None:
        """Store a new workflow run (state ``running``), held by ``owner`` when given
        (that engine runs it now), else free for any started engine to claim."""

    async def claim_runs(
        self, names: Collection[str], owner: str, limit: int
    ) -> list[tuple[RunRecord, int]]:
        """Take up to ``limit`` free ``running`` runs named in ``names`` for ``owner``,
        oldest first, each with its claim count: how often a worker took it, this time
        included (more than 1: it was interrupted before). The count identifies this
        claim in :meth:`save_step` and :meth:`finish_run`."""

    async def count_active_runs(self, names: Collection[str]) -> int:
        """How many runs named in ``names`` are ``running``, whoever holds them."""

    async def finish_run(self, run: RunRecord, owner: str, claim: int) -> bool:
        """Store the run's final state, output or error and ``completed_at``, if ``owner``
        still holds the run under claim number ``claim``; return whether it did."""

    async def get_run(self, run_id: str) -> RunRecord | None:
        """The run with this id, or ``None``."""

    async def save_step(
        self, run_id: str, step: str, result: str, elapsed: float, owner: str, claim: int
    ) -> bool:
        """Store a step's checkpoint (its JSON result), if ``owner`` still holds the run
        under claim number ``claim``; return whether it did."""

    async def load_steps(self, run_id: str) -> dict[str, str]:
        """The checkpoints of a run: step name -> JSON result."""

    # cron
    async def claim_fire(self, entry: str, fire_at: float) -> bool:
        """Whether this caller is the first to fire cron entry ``entry`` at ``fire_at``
        (several workers on one store fire each time once)."""
