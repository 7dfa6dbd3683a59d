"""The dead-letter queue: jobs that exhausted their retries, kept with their error."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING

from ..models import Job, thaw
from .errors import DeadLetterError, UnknownJobError
from .records import DeadLetter, JobRecord
from .store import Store

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["DeadLetterQueue", "find_entry", "replay_job"]


async def find_entry(store: Store, entry_id: int) -> DeadLetter:
    """The entry, or :class:`DeadLetterError` saying what exists."""
    entry = await store.get_dead(entry_id)
    if entry is None:
        raise DeadLetterError(
            f"no dead-letter entry with id {entry_id} in {store!r}; list them with "
            "'dispatch-ext dlq list'"
        )
    if entry.replayed_as is not None:
        raise DeadLetterError(
            f"dead-letter entry {entry_id} (job {entry.job.name!r}) was already replayed as "
            f"job {entry.replayed_as}"
        )
    return entry


def replay_job(entry: DeadLetter) -> JobRecord:
    """A new job with the dead job's name, payload and options, and no retries used."""
    dead = entry.job
    now = time.time()
    return JobRecord(
        "",
        dead.name,
        json.dumps(thaw(dead.payload), separators=(",", ":")),
        queue=dead.queue,
        priority=dead.priority,
        max_retries=dead.max_retries,
        timeout=dead.timeout,
        run_at=now,
        created_at=now,
    )


class DeadLetterQueue:
    """``engine.dlq``: list and replay the jobs that died."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    async def list(self, limit: int = 100, *, include_replayed: bool = False) -> list[DeadLetter]:
        """Entries, newest first (replayed ones only with ``include_replayed``)."""
        await self._engine._open()
        return await self._engine.store.list_dead(limit, include_replayed)

    async def get(self, entry_id: int) -> DeadLetter:
        """One entry; :class:`DeadLetterError` when there is none with that id."""
        await self._engine._open()
        entry = await self._engine.store.get_dead(entry_id)
        if entry is None:
            raise DeadLetterError(f"no dead-letter entry with id {entry_id}")
        return entry

    async def replay(self, entry_id: int) -> Job:
        """Enqueue the entry's job again, as a new job; the entry is marked replayed.

        ``on_job_enqueued`` fires for the new job.
        """
        engine = self._engine
        await engine._open()
        entry = await find_entry(engine.store, entry_id)
        if entry.job.name not in engine._jobs:
            raise UnknownJobError(
                f"dead-letter entry {entry_id}: "
                + engine._unknown("job", entry.job.name, engine._jobs, "@engine.job")
            )
        job = replay_job(entry)
        await engine.store.replay_dead(entry_id, job)  # gives the job its id
        gate = engine._hold(job.id) if engine._listening("on_job_enqueued") else None
        try:
            if engine._pool is not None:
                engine._pool.wake()
            snapshot = job.snapshot()
            if gate is not None:
                await engine._emit("on_job_enqueued", job=snapshot)
            return snapshot
        finally:
            if gate is not None:
                engine._release(job.id, gate)
