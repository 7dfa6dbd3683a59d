"""A store in memory, for tests and throwaway runs: nothing survives the process."""

from __future__ import annotations

import asyncio
import copy
import heapq
import itertools
from collections.abc import Awaitable, Collection, Sequence

from ..models import JobState, RunState
from .lease import Recovery, WorkerIdentity, gone_reason
from .records import DeadLetter, JobRecord, RunRecord, to_datetime

__all__ = ["MemoryStore"]

_WAITING = (JobState.PENDING, JobState.RETRYING)


class MemoryStore:
    """Keeps jobs, dead letters and workflow runs in dictionaries.

    Same behaviour as :class:`~dispatch_ext.engine.SQLiteStore` (ordering, dead-letter
    queue, checkpoints, workers and their leases), without durability. Engines in one
    process may share one.
    """

    def __init__(self) -> None:
        self._jobs: dict[str, JobRecord] = {}
        self._by_seq: dict[int, JobRecord] = {}
        self._waiting: list[tuple[int, float, int]] = []  # heap of (-priority, run_at, seq)
        self._seq = itertools.count(1)
        self._dead: dict[int, tuple[JobRecord, str, str, str | None, float, str | None]] = {}
        self._dead_ids = itertools.count(1)
        self._runs: dict[str, RunRecord] = {}
        self._steps: dict[str, dict[str, str]] = {}
        self._owners: dict[int, str | None] = {}  # seq of a running job -> its worker
        self._run_owners: dict[str, str | None] = {}  # run id -> its worker (running runs)
        self._claims: dict[str, int] = {}  # run id -> how often a worker took it
        # id -> (who, heartbeat, its lease timeout)
        self._workers: dict[str, tuple[WorkerIdentity, float, float]] = {}
        self._fires: dict[str, float] = {}
        self.is_open = False

    def __repr__(self) -> str:
        return "MemoryStore()"

    async def open(self) -> None:
        self.is_open = True

    async def close(self) -> None:
        self.is_open = False

    def _push(self, job: JobRecord) -> None:
        heapq.heappush(self._waiting, (-job.priority, job.run_at, job.seq))

    @staticmethod
    def _copy(job: JobRecord) -> JobRecord:
        clone = copy.copy(job)
        clone._frozen = job._frozen
        return clone

    async def add_job(self, job: JobRecord) -> None:
        job.seq = next(self._seq)
        job.id = str(job.seq)
        stored = self._copy(job)
        self._jobs[job.id] = stored
        self._by_seq[job.seq] = stored
        self._push(stored)

    async def claim(
        self, names: Collection[str], limit: int, now: float, owner: str | None = None
    ) -> list[JobRecord]:
        claimed: list[JobRecord] = []
        skipped: list[tuple[int, float, int]] = []
        heap = self._waiting
        while heap and len(claimed) < limit:
            key = heapq.heappop(heap)
            job = self._by_seq.get(key[2])
            if job is None or job.state not in _WAITING or job.run_at != key[1]:
                continue  # stale heap entry
            if job.run_at > now or job.name not in names:
                skipped.append(key)
                continue
            job.state, job.started_at = JobState.RUNNING, now
            self._owners[job.seq] = owner
            claimed.append(self._copy(job))
        for key in skipped:
            heapq.heappush(heap, key)
        return claimed

    async def release(self, jobs: Sequence[JobRecord], owner: str) -> None:
        for job in jobs:
            stored = self._held(job, owner)
            if stored is not None:
                self._requeue(stored)

    def _held(self, job: JobRecord, owner: str) -> JobRecord | None:
        """The stored job, if ``owner`` still runs it under the claim ``job`` came from."""
        stored = self._by_seq.get(job.seq)
        if (
            stored is None
            or stored.state is not JobState.RUNNING
            or stored.started_at != job.started_at
            or self._owners.get(job.seq) != owner
        ):
            return None
        return stored

    def _requeue(self, stored: JobRecord) -> None:
        stored.state, stored.started_at = JobState.PENDING, None
        self._owners.pop(stored.seq, None)
        self._push(stored)

    def complete(self, job: JobRecord, owner: str) -> Awaitable[bool]:
        stored = self._held(job, owner)
        if stored is not None:
            stored.state, stored.completed_at = JobState.COMPLETED, job.completed_at
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        done.set_result(stored is not None)
        return done

    async def retry(self, job: JobRecord, owner: str) -> bool:
        stored = self._held(job, owner)
        if stored is None:
            return False
        stored.state = job.state
        stored.retry_count, stored.last_error = job.retry_count, job.last_error
        stored.run_at, stored.started_at = job.run_at, None
        self._owners.pop(job.seq, None)
        self._push(stored)
        return True

    async def waiting_names(self, before: float) -> list[str]:
        return sorted(
            {
                job.name
                for job in self._jobs.values()
                if job.state in _WAITING and job.run_at < before
            }
        )

    async def bury(
        self, job: JobRecord, error: str, error_type: str, traceback: str | None, owner: str
    ) -> int | None:
        stored = self._held(job, owner)
        if stored is None:
            return None
        stored.state = JobState.DEAD
        stored.retry_count, stored.last_error = job.retry_count, job.last_error
        stored.completed_at = job.completed_at
        entry_id = next(self._dead_ids)
        failed_at = job.completed_at if job.completed_at is not None else 0.0
        self._dead[entry_id] = (self._copy(stored), error, error_type, traceback, failed_at, None)
        return entry_id

    async def get_job(self, job_id: str) -> JobRecord | None:
        job = self._jobs.get(job_id)
        return None if job is None else self._copy(job)

    async def next_run_at(self, names: Collection[str]) -> float | None:
        times = [
            job.run_at for job in self._jobs.values() if job.state in _WAITING and job.name in names
        ]
        return min(times, default=None)

    async def count_active(self, names: Collection[str]) -> int:
        return sum(
            1
            for job in self._jobs.values()
            if job.name in names and job.state in (*_WAITING, JobState.RUNNING)
        )

    async def counts(self) -> dict[str, int]:
        result = {state.value: 0 for state in JobState}
        for job in self._jobs.values():
            result[job.state.value] += 1
        return result

    async def prune(self, before: float) -> int:
        old = [
            job
            for job in self._jobs.values()
            if job.state is JobState.COMPLETED and (job.completed_at or 0.0) < before
        ]
        newest = max(self._by_seq, default=0)
        old = [job for job in old if job.seq != newest]
        for job in old:
            del self._jobs[job.id]
            del self._by_seq[job.seq]
        return len(old)

    def _entry(self, entry_id: int) -> DeadLetter:
        job, error, error_type, traceback, failed_at, replayed_as = self._dead[entry_id]
        return DeadLetter(
            id=entry_id,
            job=job.snapshot(JobState.DEAD),
            error=error,
            error_type=error_type,
            traceback=traceback,
            failed_at=to_datetime(failed_at),
            replayed_as=replayed_as,
        )

    async def list_dead(self, limit: int, include_replayed: bool) -> list[DeadLetter]:
        ids = sorted(self._dead, reverse=True)
        if not include_replayed:
            ids = [i for i in ids if self._dead[i][5] is None]
        return [self._entry(i) for i in ids[:limit]]

    async def get_dead(self, entry_id: int) -> DeadLetter | None:
        return self._entry(entry_id) if entry_id in self._dead else None

    async def replay_dead(self, entry_id: int, job: JobRecord) -> None:
        await self.add_job(job)
        self._dead[entry_id] = (*self._dead[entry_id][:5], job.id)

    async def beat(self, worker: WorkerIdentity, lease_timeout: float, now: float) -> Recovery:
        rejoined = worker.id not in self._workers
        self._workers[worker.id] = (worker, now, lease_timeout)
        gone: list[str] = []
        for other, heartbeat_at, lease in list(self._workers.values()):
            if other.id == worker.id:
                continue
            reason = gone_reason(
                worker, other.pid, other.node, other.token, heartbeat_at, now, lease
            )
            if reason is not None:
                del self._workers[other.id]
                gone.append(f"{other.describe()} is gone: {reason}")
        jobs = 0
        for seq, owner in list(self._owners.items()):
            stored = self._by_seq.get(seq)
            if stored is None or stored.state is not JobState.RUNNING:
                del self._owners[seq]
            elif owner is None or owner not in self._workers:
                self._requeue(stored)
                jobs += 1
        runs = 0
        for run_id, owner in self._run_owners.items():
            if owner is not None and owner not in self._workers:
                self._run_owners[run_id] = None
                runs += 1
        return Recovery(jobs, runs, tuple(gone), rejoined)

    async def leave(self, worker_id: str) -> None:
        for seq, owner in list(self._owners.items()):
            stored = self._by_seq.get(seq)
            if owner == worker_id and stored is not None and stored.state is JobState.RUNNING:
                self._requeue(stored)
        for run_id, owner in self._run_owners.items():
            if owner == worker_id:
                self._run_owners[run_id] = None
        self._workers.pop(worker_id, None)

    async def add_run(self, run: RunRecord, owner: str | None = None) -> None:
        self._runs[run.id] = copy.copy(run)
        self._run_owners[run.id] = owner
        self._claims[run.id] = 0 if owner is None else 1

    async def claim_runs(
        self, names: Collection[str], owner: str, limit: int
    ) -> list[tuple[RunRecord, int]]:
        free = sorted(
            (
                run
                for run in self._runs.values()
                if run.state is RunState.RUNNING
                and run.name in names
                and self._run_owners.get(run.id) is None
            ),
            key=lambda run: run.started_at,
        )[:limit]
        claimed: list[tuple[RunRecord, int]] = []
        for run in free:
            self._run_owners[run.id] = owner
            self._claims[run.id] = self._claims.get(run.id, 0) + 1
            claimed.append((copy.copy(run), self._claims[run.id]))
        return claimed

    async def count_active_runs(self, names: Collection[str]) -> int:
        return sum(
            1 for run in self._runs.values() if run.state is RunState.RUNNING and run.name in names
        )

    def _run_held(self, run_id: str, owner: str, claim: int) -> bool:
        run = self._runs.get(run_id)
        return (
            run is not None
            and run.state is RunState.RUNNING
            and self._run_owners.get(run_id) == owner
            and self._claims.get(run_id) == claim
        )

    async def finish_run(self, run: RunRecord, owner: str, claim: int) -> bool:
        if not self._run_held(run.id, owner, claim):
            return False
        self._runs[run.id] = copy.copy(run)
        self._run_owners.pop(run.id, None)
        return True

    async def get_run(self, run_id: str) -> RunRecord | None:
        run = self._runs.get(run_id)
        return None if run is None else copy.copy(run)

    async def save_step(
        self, run_id: str, step: str, result: str, elapsed: float, owner: str, claim: int
    ) -> bool:
        if not self._run_held(run_id, owner, claim):
            return False
        self._steps.setdefault(run_id, {})[step] = result
        return True

    async def load_steps(self, run_id: str) -> dict[str, str]:
        return dict(self._steps.get(run_id, {}))

    async def claim_fire(self, entry: str, fire_at: float) -> bool:
        if self._fires.get(entry, float("-inf")) >= fire_at:
            return False
        self._fires[entry] = fire_at
        return True
