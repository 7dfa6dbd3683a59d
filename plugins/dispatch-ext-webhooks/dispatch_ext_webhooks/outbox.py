"""The durable outbox: an SQLite file holding every webhook until it is delivered.

Tables:

- ``messages``: one row per (event, endpoint): the ``webhook-id``, the event type, the
  exact body, and the delivery state: ``pending``, ``failed`` (given up, the reason in
  ``last_error``) or ``cancelled`` (its endpoint was disabled). A delivered row is
  deleted. An event for two endpoints is two rows with the same ``webhook-id``.
- ``endpoints``: the endpoints disabled after answering 410 Gone, with the reason.

The file runs in WAL mode. With ``synchronous=NORMAL`` (the default) a committed row
survives the process being killed; ``synchronous=FULL`` also survives power loss, at the
price of an fsync per event. No connection checkpoints the WAL as a side effect of a
commit: the senders do it on their own time, so a hook never waits for a checkpoint
(see :meth:`Outbox.checkpoint`).

Several processes may share one file: a sender claims rows with a lease before sending
them, so two senders never send one message at the same time. A lease left by a killed
process is released when a sender starts and finds that process gone (POSIX), or else
when it expires; the message is then sent again, with the same ``webhook-id``.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .settings import synchronous_mode

__all__ = ["Claimed", "FailedDelivery", "Outbox", "read_summary"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    id INTEGER PRIMARY KEY,
    msg_id TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    type TEXT NOT NULL,
    created_at REAL NOT NULL,
    body BLOB NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL NOT NULL,
    lease_until REAL NOT NULL DEFAULT 0,
    lease_owner INTEGER NOT NULL DEFAULT 0,
    last_status INTEGER,
    last_error TEXT,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_due ON messages (endpoint, state, next_attempt_at);
CREATE TABLE IF NOT EXISTS endpoints (
    url TEXT PRIMARY KEY,
    disabled_at REAL NOT NULL,
    reason TEXT NOT NULL
);
"""


# After a checkpoint, a WAL file larger than this is truncated to it.
_WAL_SIZE_LIMIT = 64 * 1024 * 1024

_COLUMNS = "(msg_id, endpoint, type, created_at, body, next_attempt_at, updated_at)"
_ROW = "(?, ?, ?, ?, ?, ?, ?)"

# Writers of one file in one process take turns on a Python lock, which hands over at
# once; SQLite's own busy handler (for writers in other processes) sleeps and retries.
_WRITE_LOCKS: dict[str, threading.Lock] = {}
_WRITE_LOCKS_GUARD = threading.Lock()


def _write_lock(path: Path) -> threading.Lock:
    key = os.path.realpath(path)
    with _WRITE_LOCKS_GUARD:
        lock = _WRITE_LOCKS.get(key)
        if lock is None:
            lock = _WRITE_LOCKS[key] = threading.Lock()
        return lock


def _forget_locks_after_fork() -> None:
    global _WRITE_LOCKS_GUARD
    _WRITE_LOCKS_GUARD = threading.Lock()
    _WRITE_LOCKS.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_locks_after_fork)


@dataclass(frozen=True)
class Claimed:
    """A message a sender holds a lease on (its body is read when it is sent)."""

    row_id: int
    attempts: int
    """Attempts made before this one."""
    msg_id: str
    event_type: str


@dataclass(frozen=True)
class FailedDelivery:
    """A message that was given up on or cancelled, with why."""

    msg_id: str
    event_type: str
    endpoint: str
    state: str
    attempts: int
    last_status: int | None
    reason: str


class Outbox:
    """One connection to the outbox file (one per thread: connections are not shared).

    Args:
        path: The SQLite file; created with its folder when missing.
        synchronous: SQLite ``synchronous`` mode.
        busy_timeout: Seconds to wait for another writer.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "NORMAL",
        busy_timeout: float = 30.0,
    ) -> None:
        self.path = Path(path)
        mode = synchronous_mode(synchronous)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = _write_lock(self.path)
        self._conn = sqlite3.connect(
            self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(f"PRAGMA synchronous={mode}")
            self._conn.execute("PRAGMA wal_autocheckpoint=0")
            self._conn.execute(f"PRAGMA journal_size_limit={_WAL_SIZE_LIMIT}")
            with self._write() as conn:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            raise sqlite3.DatabaseError(
                f"webhooks: cannot use {self.path} as the outbox ({exc}); point outbox_path "
                "(or DISPATCH_WEBHOOKS_OUTBOX) at a writable SQLite file"
            ) from exc

    def close(self) -> None:
        self._conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (several statements, all or nothing)."""
        conn = self._conn
        with self._lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _write_one(self, sql: str, parameters: Iterable[object]) -> int:
        """One statement in its own transaction: one call into SQLite, not three."""
        with self._lock:
            return self._conn.execute(sql, tuple(parameters)).rowcount

    # -- the hook's side ----------------------------------------------------------------

    def append(
        self, msg_id: str, event_type: str, created_at: float, body: bytes, endpoints: Iterable[str]
    ) -> None:
        """Store one event, a row per endpoint; committed when this returns."""
        values: list[object] = []
        for url in endpoints:
            values += (msg_id, url, event_type, created_at, body, created_at, created_at)
        count = len(values) // 7
        if count:
            rows = ", ".join([_ROW] * count)
            self._write_one(f"INSERT INTO messages {_COLUMNS} VALUES {rows}", values)

    # -- the sender's side --------------------------------------------------------------

    def claim(self, endpoint: str, now: float, lease: float, limit: int = 1) -> list[Claimed]:
        """Lease up to ``limit`` due messages to ``endpoint``, the longest due first.

        ``lease`` is the time reserved per message: the batch is held for ``lease`` times
        its length, however long the receiver takes.
        """
        with self._write() as conn:
            rows = conn.execute(
                "SELECT id, attempts, msg_id, type FROM messages "
                "WHERE endpoint = ? AND state = 'pending' AND next_attempt_at <= ? "
                "AND lease_until <= ? ORDER BY next_attempt_at, id LIMIT ?",
                (endpoint, now, now, limit),
            ).fetchall()
            if rows:
                ids = [row[0] for row in rows]
                conn.execute(
                    "UPDATE messages SET lease_until = ?, lease_owner = ? "
                    f"WHERE id IN ({','.join('?' * len(ids))})",
                    (now + lease * len(ids), os.getpid(), *ids),
                )
        return [Claimed(*row) for row in rows]

    def body(self, claimed: Claimed) -> bytes | None:
        """The exact body to send, or ``None`` when the message is no longer pending."""
        row = self._conn.execute(
            "SELECT body FROM messages WHERE id = ? AND state = 'pending'", (claimed.row_id,)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def release(self, claimed: Iterable[Claimed]) -> None:
        """Give up the leases of messages claimed but not sent (they are due again)."""
        ids = [c.row_id for c in claimed]
        if ids:
            marks = ",".join("?" * len(ids))
            self._write_one(f"UPDATE messages SET lease_until = 0 WHERE id IN ({marks})", ids)

    def release_orphans(self) -> int:
        """End the leases of processes that no longer exist (killed mid-delivery).

        Their messages are sent again at once rather than when the lease runs out. Only
        on POSIX, where a process can be looked up by id; elsewhere leases just expire.
        """
        if os.name != "posix":
            return 0
        now = time.time()
        owners = self._conn.execute(
            "SELECT DISTINCT lease_owner FROM messages WHERE state = 'pending' AND lease_until > ?",
            (now,),
        ).fetchall()
        gone = [pid for (pid,) in owners if pid != os.getpid() and not _alive(pid)]
        if not gone:
            return 0
        marks = ",".join("?" * len(gone))
        with self._write() as conn:
            cursor = conn.execute(
                f"UPDATE messages SET lease_until = 0 WHERE state = 'pending' "
                f"AND lease_until > ? AND lease_owner IN ({marks})",
                (now, *gone),
            )
            return cursor.rowcount

    def next_due(self, endpoint: str) -> float | None:
        """When the next pending message to ``endpoint`` may be sent, or ``None``."""
        row = self._conn.execute(
            "SELECT MIN(MAX(next_attempt_at, lease_until)) FROM messages "
            "WHERE endpoint = ? AND state = 'pending'",
            (endpoint,),
        ).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def checkpoint(self) -> None:
        """Copy what the WAL holds into the main file, without blocking writers or readers.

        Writers go on appending meanwhile, so this takes no write lock.
        """
        self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def delivered(self, claimed: Iterable[Claimed]) -> None:
        """The receiver acknowledged these messages: forget them."""
        ids = [c.row_id for c in claimed]
        if ids:
            marks = ",".join("?" * len(ids))
            self._write_one(f"DELETE FROM messages WHERE id IN ({marks})", ids)

    def retry(self, claimed: Claimed, at: float, status: int | None, error: str) -> None:
        """The attempt failed and may be repeated at ``at``."""
        self._write_one(
            "UPDATE messages SET attempts = attempts + 1, next_attempt_at = ?, "
            "lease_until = 0, last_status = ?, last_error = ?, updated_at = ? WHERE id = ?",
            (at, status, error, time.time(), claimed.row_id),
        )

    def give_up(self, claimed: Claimed, status: int | None, reason: str) -> None:
        """Stop trying this message; keep it, with ``reason``, for inspection."""
        self._write_one(
            "UPDATE messages SET state = 'failed', attempts = attempts + 1, "
            "lease_until = 0, last_status = ?, last_error = ?, updated_at = ? WHERE id = ?",
            (status, reason, time.time(), claimed.row_id),
        )

    def disable(self, endpoint: str, reason: str) -> int:
        """Record ``endpoint`` as disabled and cancel what is pending for it."""
        now = time.time()
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO endpoints (url, disabled_at, reason) VALUES (?, ?, ?)",
                (endpoint, now, reason),
            )
            cursor = conn.execute(
                "UPDATE messages SET state = 'cancelled', lease_until = 0, last_error = ?, "
                "updated_at = ? WHERE endpoint = ? AND state = 'pending'",
                (reason, now, endpoint),
            )
            return cursor.rowcount

    def enable(self, endpoint: str) -> int:
        """Lift a disable: the endpoint's cancelled messages become pending again."""
        now = time.time()
        with self._write() as conn:
            conn.execute("DELETE FROM endpoints WHERE url = ?", (endpoint,))
            cursor = conn.execute(
                "UPDATE messages SET state = 'pending', next_attempt_at = ?, updated_at = ? "
                "WHERE endpoint = ? AND state = 'cancelled'",
                (now, now, endpoint),
            )
            return cursor.rowcount

    def disabled(self) -> dict[str, str]:
        """Disabled endpoints and why."""
        return dict(self._conn.execute("SELECT url, reason FROM endpoints").fetchall())

    # -- inspection ---------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Messages per state (``pending``, ``failed``, ``cancelled``)."""
        return dict(
            self._conn.execute("SELECT state, COUNT(*) FROM messages GROUP BY state").fetchall()
        )

    def pending(self, endpoints: Iterable[str]) -> int:
        """Pending messages to these endpoints."""
        urls = list(endpoints)
        if not urls:
            return 0
        marks = ",".join("?" * len(urls))
        row = self._conn.execute(
            f"SELECT COUNT(*) FROM messages WHERE state = 'pending' AND endpoint IN ({marks})",
            urls,
        ).fetchone()
        return int(row[0])

    def failures(self) -> list[FailedDelivery]:
        """Messages given up on or cancelled, oldest first."""
        rows = self._conn.execute(
            "SELECT msg_id, type, endpoint, state, attempts, last_status, last_error "
            "FROM messages WHERE state != 'pending' ORDER BY id"
        ).fetchall()
        return [
            FailedDelivery(
                msg_id=msg_id,
                event_type=event_type,
                endpoint=endpoint,
                state=state,
                attempts=attempts,
                last_status=status,
                reason=reason or "",
            )
            for msg_id, event_type, endpoint, state, attempts, status, reason in rows
        ]


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def read_summary(path: Path) -> tuple[dict[str, int], dict[str, str]] | None:
    """Counts per state and disabled endpoints, read-only; ``None`` when there is no file."""
    if not path.exists():
        return None
    conn = sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True, timeout=1.0)
    try:
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        if "messages" not in tables:
            return {}, {}
        counts = dict(
            conn.execute("SELECT state, COUNT(*) FROM messages GROUP BY state").fetchall()
        )
        disabled = dict(conn.execute("SELECT url, reason FROM endpoints").fetchall())
        return counts, disabled
    finally:
        conn.close()
