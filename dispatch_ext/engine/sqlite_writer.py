"""How :class:`~dispatch_ext.engine.SQLiteStore` writes: group commit on the loop thread.

Statements are short and run on the event loop's thread, on one connection. A change a
coroutine waits for (an enqueue, a claim) is written at once, in one transaction with
everything queued before it, unless another task already wrote during this loop
iteration: then it joins the queue, and the queue is written in one transaction at the
end of the iteration. So one producer awaiting enqueues one by one pays no loop
round-trip, and many concurrent producers share one commit (group commit). Changes
nobody waits for (a completion without listeners) always join the queue.

Checkpoints (copying the WAL into the database and syncing it, the only ``fsync`` with
``synchronous=NORMAL``) run on a background thread with its own connection, so that
they never stall the loop.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["WriteQueue"]

logger = logging.getLogger("dispatch_ext.engine")

_Op = tuple[Callable[..., Any], Any, "asyncio.Future[Any]", bool]

_THROUGH_PER_ITERATION = 16  # immediate writes one task may do before it has to yield
_CHECKPOINT_EVERY = 256  # commits between two checkpoint requests
_LAZY_DELAY = 0.003  # seconds a change nobody waits for may stay queued
_LAZY_LIMIT = 256  # queued changes that trigger a write at the end of the iteration


class WriteQueue:
    """The pending changes of one connection and the logic that commits them."""

    def __init__(self, conn: sqlite3.Connection, loop: asyncio.AbstractEventLoop, path: Path):
        self.conn: sqlite3.Connection | None = conn
        self.loop = loop
        self._ops: list[_Op] = []
        self._scheduled = False  # an end-of-iteration flush is scheduled
        self._wrote_task: object = None  # the task that wrote at once in this iteration
        self._wrote_count = 0
        self._later: asyncio.TimerHandle | None = None  # the write of lazy changes
        self._commits = 0
        self._checkpointer = _Checkpointer(path)

    # -- submitting ---------------------------------------------------------------------

    def submit(
        self, fn: Callable[..., Any], arg: Any, *, batch: bool = False, wait: bool = True
    ) -> asyncio.Future[Any]:
        """Queue ``fn(conn, arg)`` (``fn(conn, [args])`` for a run of ``batch`` ops, which
        returns ``None`` or a list with one result per op).

        ``wait=False``: nobody awaits the result soon; the change joins the next write,
        at the latest a few milliseconds later.
        """
        if self.conn is None:
            raise RuntimeError("the SQLite store is closed")
        future = self.loop.create_future()
        self._ops.append((fn, arg, future, batch))
        if wait:
            task = asyncio.current_task(self.loop)
            if self._wrote_task is None or (
                task is self._wrote_task and self._wrote_count < _THROUGH_PER_ITERATION
            ):
                if self._wrote_task is None:
                    self._wrote_task, self._wrote_count = task, 0
                self._wrote_count += 1
                self._schedule()
                self.flush()
                return future
            self._schedule()
        elif len(self._ops) >= _LAZY_LIMIT:
            self._schedule()
        elif not self._scheduled and self._later is None:
            self._later = self.loop.call_later(_LAZY_DELAY, self._end_of_iteration)
        return future

    def _schedule(self) -> None:
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self._end_of_iteration)

    def _end_of_iteration(self) -> None:
        self._scheduled = False
        self._wrote_task = None
        self._later = None
        if self._ops:
            self.flush()

    # -- writing ------------------------------------------------------------------------

    def flush(self) -> None:
        """Write every queued change in one transaction and resolve their futures."""
        ops, conn = self._ops, self.conn
        if not ops or conn is None:
            return
        self._ops = []
        if self._later is not None:
            self._later.cancel()
            self._later = None
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):  # another process writes
                self._ops = ops + self._ops
                self._later = self.loop.call_later(0.01, self._end_of_iteration)
                return
            _fail(ops, exc)
            return
        try:
            results = _apply(conn, ops)
            conn.execute("COMMIT")
        except Exception as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if len(ops) == 1:
                _fail(ops, exc)
            else:  # isolate the faulty change: write the others one by one
                for op in ops:
                    self._ops.append(op)
                    self.flush()
            return
        for (_, _, future, _), result in zip(ops, results, strict=True):
            if not future.done():
                future.set_result(result)
        self._commits += 1
        if self._commits % _CHECKPOINT_EVERY == 0:
            self._checkpointer.request()

    async def close(self) -> None:
        """Write what is queued, stop the checkpointer, close the connection."""
        while self._ops and self.conn is not None:
            self.flush()
            if self._ops:  # another process holds the write lock: wait a little
                await asyncio.sleep(0.01)
        await asyncio.to_thread(self._checkpointer.stop)
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()

    def start_checkpointer(self) -> None:
        conn = self.conn
        if conn is not None:
            conn.execute("PRAGMA wal_autocheckpoint=0")
            self._checkpointer.start()


def _apply(conn: sqlite3.Connection, ops: list[_Op]) -> list[Any]:
    results: list[Any] = []
    i, n = 0, len(ops)
    while i < n:
        fn, arg, _, batch = ops[i]
        if not batch:
            results.append(fn(conn, arg))
            i += 1
            continue
        j = i + 1
        while j < n and ops[j][0] is fn:
            j += 1
        out = fn(conn, [op[1] for op in ops[i:j]])  # None, or one result per op
        results.extend([None] * (j - i) if out is None else out)
        i = j
    return results


def _fail(ops: list[_Op], exc: BaseException) -> None:
    for _, _, future, _ in ops:
        if not future.done():
            future.set_exception(exc)


class _Checkpointer:
    """Runs ``PRAGMA wal_checkpoint(PASSIVE)`` on its own thread and connection.

    It checkpoints when asked (every few hundred commits) and at least every second
    while the store is open, so the WAL file stays small.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._wanted = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._serve, name="dispatch-sqlite-checkpoint", daemon=True
        )
        self._thread.start()

    def request(self) -> None:
        self._wanted.set()

    def stop(self) -> None:
        self._stopping = True
        self._wanted.set()
        if self._thread is not None:
            self._thread.join(30)
            self._thread = None

    def _serve(self) -> None:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error:
            logger.exception("SQLite store %s: the checkpoint thread cannot connect", self.path)
            return
        try:
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=1000")
            while not self._stopping:
                self._wanted.wait(1.0)
                self._wanted.clear()
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                except sqlite3.Error as exc:
                    logger.warning("SQLite store %s: checkpoint failed: %s", self.path, exc)
        finally:
            conn.close()
