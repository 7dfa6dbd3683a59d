"""Fires the engine's cron entries while it runs.

Several workers on one store fire each fire time once: the first to reach it claims it
in the store (:meth:`Store.claim_fire`), the others skip it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from ..models import Job
from .cron import ScheduledEntry, parse_schedule
from .errors import UnknownJobError
from .records import dumps

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["CronScheduler"]

logger = logging.getLogger("dispatch_ext.engine")


class CronScheduler:
    """The cron entries of one engine and the task that fires them."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.entries: dict[str, ScheduledEntry] = {}
        self._task: asyncio.Task[None] | None = None

    def add(self, name: str, schedule: str, job_name: str, payload: Any) -> ScheduledEntry:
        """Check and keep an entry (see :meth:`Engine.cron`)."""
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"a cron entry name must be a non-empty string, got {name!r}")
        if name in self.entries:
            raise ValueError(f"cron entry {name!r} is already registered; pick another name")
        parsed = parse_schedule(name, schedule)
        text = dumps(payload, f"the payload of cron entry {name!r}")
        entry = ScheduledEntry(name, parsed, job_name, json.loads(text), text)
        entry.next_run_at = parsed.next_after(time.time())
        self.entries[name] = entry
        return entry

    def check(self, jobs: Iterable[str]) -> None:
        """Refuse entries whose job is not registered (naming the entry)."""
        known = set(jobs)
        for entry in self.entries.values():
            if entry.job_name not in known:
                raise UnknownJobError(
                    f"cron entry {entry.name!r}: "
                    + self._engine._unknown("job", entry.job_name, known, "@engine.job")
                )

    def start(self) -> None:
        """(Re)start firing, from now: missed fire times are not made up."""
        if self._task is not None:
            self._task.cancel()
            self._task = None
        if self.entries:
            self._task = asyncio.create_task(self._loop(), name="dispatch-cron")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def _loop(self) -> None:
        engine = self._engine
        entries = list(self.entries.values())
        now = time.time()
        for entry in entries:
            entry.next_run_at = entry.schedule.next_after(now)
        while not engine.stopping:
            delay = min(entry.next_run_at for entry in entries) - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
                continue
            now = time.time()
            for entry in entries:
                if entry.next_run_at <= now and not engine.stopping:
                    due = entry.next_run_at
                    entry.next_run_at = entry.schedule.next_after(now)
                    await self._fire(entry, due)

    async def _fire(self, entry: ScheduledEntry, due: float) -> None:
        engine = self._engine
        try:
            if not await engine.store.claim_fire(entry.name, due):
                return  # another worker on this store fired it
        except Exception:
            logger.exception("cron entry %r could not record its fire time", entry.name)
            return
        try:
            job = engine._new_job(entry.job_name, entry.payload, {})
        except Exception:
            logger.exception("cron entry %r could not build its job", entry.name)
            return

        async def fired(snapshot: Job) -> None:
            if engine._listening("on_cron_fired"):
                await engine._emit("on_cron_fired", entry=entry.snapshot(), job=snapshot)

        try:
            await engine._enqueue(job, after=fired)
        except Exception:
            logger.exception("cron entry %r could not enqueue job %r", entry.name, entry.job_name)
