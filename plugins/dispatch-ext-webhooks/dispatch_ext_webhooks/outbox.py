"""The durable outbox: an SQLite file holding every webhook until it is delivered.

Tables:

- ``messages``: one row per (event, endpoint): the ``webhook-id``, the event type, the
  exact body, and the delivery state: ``pending``, ``failed`` (given up, the reason in
  ``last_error``) or ``cancelled`` (its endpoint was disabled). A delivered row is
  deleted. An event for two endpoints is two rows with the same ``webhook-id``.
- ``endpoints``: the endpoints disabled after answering 410 Gone, with the reason.

The file runs in WAL mode. With ``synchronous=NORMAL`` (the default) a committed row
survives the process being killed; ``synchronous=FULL`` also survives power loss, at the
price of an fsync per event. The connection that appends rows never checkpoints the WAL
(the senders do), so a hook never pays for a checkpoint. Several processes may share one
file: a sender claims a row with a lease before sending it, so two senders never send one
message at the same time. A lease left by a killed process is released when a sender
starts and finds that process gone (POSIX), or else when it expires; the message is then
sent again, with the same ``webhook-id``.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

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

_SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


@dataclass(frozen=True)
class Claimed:
    """A message a sender holds a lease on."""

    row_id: int
    attempts: int
    """Attempts made before this one."""
    msg_id: str
    event_type: str
    body: bytes


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
        checkpoints: Whether this connection checkpoints the WAL when it grows; the
            hooks' connection does not, the senders' do.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        synchronous: str = "NORMAL",
        busy_timeout: float = 30.0,
        checkpoints: bool = True,
    ) -> None:
        self.path = Path(path)
        if synchronous.upper() not in _SYNCHRONOUS:
            raise ValueError(
                f"webhooks: synchronous must be one of {', '.join(_SYNCHRONOUS)}, "
                f"got {synchronous!r}"
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False
        )
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(f"PRAGMA synchronous={synchronous.upper()}")
            if not checkpoints:
                self._conn.execute("PRAGMA wal_autocheckpoint=0")
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
        conn = self._conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- the hook's side ----------------------------------------------------------------

    def append(
        self, msg_id: str, event_type: str, created_at: float, body: bytes, endpoints: Iterable[str]
    ) -> None:
        """Store one event, a row per endpoint; committed when this returns."""
        rows = [
            (msg_id, url, event_type, created_at, body, created_at, created_at) for url in endpoints
        ]
        with self._write() as conn:
            conn.executemany(
                "INSERT INTO messages (msg_id, endpoint, type, created_at, body, "
                "next_attempt_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )

    # -- the sender's side --------------------------------------------------------------

    def claim(self, endpoint: str, now: float, lease: float) -> Claimed | None:
        """Lease the next due message to ``endpoint``, or ``None`` when none is due."""
        with self._write() as conn:
            row = conn.execute(
                "SELECT id, attempts, msg_id, type, body FROM messages "
                "WHERE endpoint = ? AND state = 'pending' AND next_attempt_at <= ? "
                "AND lease_until <= ? ORDER BY next_attempt_at, id LIMIT 1",
                (endpoint, now, now),
            ).fetchone()
            if row is None:
                return None
            conn.execute(
                "UPDATE messages SET lease_until = ?, lease_owner = ? WHERE id = ?",
                (now + lease, os.getpid(), row[0]),
            )
        return Claimed(row[0], row[1], row[2], row[3], bytes(row[4]))

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
        """Move what the WAL holds into the main file, without waiting for readers."""
        self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def delivered(self, claimed: Claimed) -> None:
        """The receiver acknowledged: forget the message."""
        with self._write() as conn:
            conn.execute("DELETE FROM messages WHERE id = ?", (claimed.row_id,))

    def retry(self, claimed: Claimed, at: float, status: int | None, error: str) -> None:
        """The attempt failed and may be repeated at ``at``."""
        now = time.time()
        with self._write() as conn:
            conn.execute(
                "UPDATE messages SET attempts = attempts + 1, next_attempt_at = ?, "
                "lease_until = 0, last_status = ?, last_error = ?, updated_at = ? WHERE id = ?",
                (at, status, error, now, claimed.row_id),
            )

    def give_up(self, claimed: Claimed, status: int | None, reason: str) -> None:
        """Stop trying this message; keep it, with ``reason``, for inspection."""
        now = time.time()
        with self._write() as conn:
            conn.execute(
                "UPDATE messages SET state = 'failed', attempts = attempts + 1, "
                "lease_until = 0, last_status = ?, last_error = ?, updated_at = ? WHERE id = ?",
                (status, reason, now, claimed.row_id),
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
