"""Who runs what: the workers registered in a store, their heartbeats, and recovery.

Every started engine registers itself in its store as a *worker* (an id, its process id,
host name and a heartbeat time) and claims jobs and workflow runs under that id. While
it runs it refreshes its heartbeat every ``lease_timeout / 6`` seconds, at most every 5 s
(a change nobody waits for, so it usually shares a commit with other writes) and, in the
same transaction, looks for workers that are gone:

- a worker whose heartbeat is older than *its own* ``lease_timeout`` (a crashed process
  on another host, or a frozen one): each worker stores its lease timeout with its row,
  and is judged by it, whatever the observer's;
- a worker on the same host (the same process table) whose process no longer exists:
  found at once, without waiting for its lease to run out.

The jobs a gone worker was running go back to the queue and its workflow runs become
free for any engine to resume. A worker that finds it was presumed gone registers again
(same id) and drops what it had claimed but not started; the results of the attempts it
was running when it lost its lease are discarded by the store (fencing: see
:mod:`dispatch_ext.engine.store`). A cleanly stopped engine puts back what it did not
finish and removes its row. An engine that only enqueues (a producer that never starts)
registers nothing and recovers nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .records import new_id

if TYPE_CHECKING:
    from .store import Store

__all__ = ["Lease", "Recovery", "WorkerIdentity", "gone_reason", "identify", "process_alive"]

logger = logging.getLogger("dispatch_ext.engine")

DEFAULT_LEASE_TIMEOUT = 30.0
"""Seconds without a heartbeat after which a worker is presumed gone."""

_BEATS_PER_LEASE = 6
_LONGEST_BEAT = 5.0  # seconds: a dead process on this host is noticed within this


@dataclass(frozen=True)
class WorkerIdentity:
    """One started engine, as its store knows it.

    Attributes:
        id: Unique per engine start.
        pid: The process id.
        hostname: For people reading the store.
        node: Processes with the same node share one process table, so a worker can tell
            whether another worker's process still exists.
        token: The process's start time (Linux), so that a reused process id is not
            mistaken for the worker's process; ``None`` where unknown.
    """

    id: str
    pid: int
    hostname: str
    node: str
    token: str | None

    def describe(self) -> str:
        return f"worker {self.id} (pid {self.pid} on {self.hostname})"


@dataclass(frozen=True)
class Recovery:
    """What one heartbeat found: work of gone workers put back, and who was gone."""

    jobs: int = 0
    runs: int = 0
    gone: tuple[str, ...] = ()  # "worker ... (pid ... on ...) is gone: why"
    rejoined: bool = False  # this worker's row had been removed by another worker

    def __bool__(self) -> bool:
        return bool(self.jobs or self.runs or self.gone or self.rejoined)


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def _node() -> str:
    """Identifies this process table: boot id and pid namespace on Linux, else the host."""
    host = socket.gethostname()
    boot = _read("/proc/sys/kernel/random/boot_id")
    if boot is None:
        return host
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return f"{host}/{boot}"
    return f"{boot}/{namespace}"


def _stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of a process from ``/proc/PID/stat``; ``None`` when it is gone."""
    text = _read(f"/proc/{pid}/stat")
    if text is None:
        return None
    fields = text[text.rfind(")") + 2 :].split()  # after "pid (command) "
    if len(fields) < 20:
        return None
    return fields[0], fields[19]


def _token(pid: int) -> str | None:
    found = _stat(pid) if os.path.isdir("/proc/self") else None
    return None if found is None else found[1]


def identify() -> WorkerIdentity:
    """A new identity for an engine starting in this process."""
    pid = os.getpid()
    return WorkerIdentity(new_id(), pid, socket.gethostname(), _node(), _token(pid))


def process_alive(pid: int, token: str | None) -> bool:
    """Whether process ``pid`` (started at ``token``, when known) still exists here.

    A zombie (exited, not yet reaped) counts as gone. Where processes cannot be checked
    (Windows), every process counts as alive and only the lease applies.
    """
    if pid <= 0:
        return False
    if os.path.isdir("/proc/self"):
        found = _stat(pid)
        if found is None:
            return False
        state, started = found
        return state not in ("Z", "X") and (token is None or started == token)
    if sys.platform == "win32":  # os.kill(pid, 0) would signal the process there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, as another user's process
        return True
    return True


def gone_reason(
    me: WorkerIdentity,
    pid: int,
    node: str,
    token: str | None,
    heartbeat_at: float,
    now: float,
    lease_timeout: float,
) -> str | None:
    """Why another worker counts as gone, or ``None`` while it counts as alive.

    ``lease_timeout`` is that worker's own lease, as stored with it.
    """
    silent = now - heartbeat_at
    if silent > lease_timeout:
        return f"no heartbeat for {silent:.0f} s (lease {lease_timeout:g} s)"
    if node == me.node and not process_alive(pid, token):
        return "its process has exited"
    return None


class Lease:
    """Keeps one started engine registered in its store: heartbeats and recovery."""

    def __init__(
        self,
        store: Store,
        timeout: float,
        on_recovered: Callable[[Recovery], None] | None = None,
    ) -> None:
        self.store = store
        self.timeout = timeout
        self.interval = min(timeout / _BEATS_PER_LEASE, _LONGEST_BEAT)
        self.identity = identify()
        self._on_recovered = on_recovered
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> Recovery:
        """Register, put back the work of gone workers, then heartbeat in the background."""
        recovery = await self.store.beat(self.identity, self.timeout, time.time())
        self._report(recovery, first=True)
        self._task = asyncio.create_task(self._keep(), name="dispatch-heartbeat")
        return recovery

    async def stop(self) -> None:
        """Stop heartbeating; put back what this worker still holds and deregister."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.store.leave(self.identity.id)

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                recovery = await self.store.beat(self.identity, self.timeout, time.time())
            except Exception as exc:
                logger.warning("%r: heartbeat failed (%s); trying again", self.store, exc)
                continue
            self._report(recovery, first=False)

    def _report(self, recovery: Recovery, first: bool) -> None:
        if not recovery:
            return
        if recovery.rejoined and not first:
            logger.warning(
                "%r: %s had been presumed gone by another worker (no heartbeat for over "
                "%g s: was the process stopped or its event loop blocked?); it registered "
                "again, and the results of the jobs and workflow steps it was running are "
                "discarded, as other workers run them again",
                self.store,
                self.identity.describe(),
                self.timeout,
            )
        for gone in recovery.gone:
            logger.warning("%r: %s", self.store, gone)
        if recovery.jobs or recovery.runs:
            logger.warning(
                "%r: %d job(s) left running by gone workers went back to the queue; "
                "%d workflow run(s) will resume",
                self.store,
                recovery.jobs,
                recovery.runs,
            )
        if self._on_recovered is not None and (
            recovery.jobs or recovery.runs or (recovery.rejoined and not first)
        ):
            self._on_recovered(recovery)
