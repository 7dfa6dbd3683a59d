"""The durable store: one SQLite file in WAL mode.

Statements run on the event loop's thread, on one connection, and are short: every
change a coroutine asks for is queued and the queue is written at the end of the loop
iteration, in one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``). Concurrent enqueues,
claims and completions therefore share one commit (group commit), and each caller
resumes only once its change is committed. Runs of the same statement (inserts,
completions) become one ``executemany``; claims take many jobs with one
``UPDATE ... RETURNING``.

Durability: WAL with ``synchronous=NORMAL``. A committed change survives a crash of the
process (``kill -9``); the last commits before a power loss may be lost.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from ..models import JobState, RunState
from .records import DeadLetter, JobRecord, RunRecord, to_datetime
from .sqlite_writer import WriteQueue

__all__ = ["DEFAULT_DATABASE", "SQLiteStore"]

logger = logging.getLogger("dispatch_ext.engine")

DEFAULT_DATABASE = "dispatch.sqlite3"
"""The default database file, relative to the current directory."""

SCHEMA_VERSION = 1

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS jobs (
        seq INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        queue TEXT NOT NULL,
        payload TEXT NOT NULL,
        state TEXT NOT NULL,
        priority INTEGER NOT NULL,
        max_retries INTEGER NOT NULL,
        retry_count INTEGER NOT NULL,
        last_error TEXT,
        run_at REAL NOT NULL,
        created_at REAL NOT NULL,
        started_at REAL,
        completed_at REAL,
        timeout REAL
    )""",
    """CREATE INDEX IF NOT EXISTS jobs_waiting ON jobs (priority DESC, run_at, seq)
        WHERE state IN ('pending', 'retrying')""",
    """CREATE INDEX IF NOT EXISTS jobs_running ON jobs (seq) WHERE state = 'running'""",
    """CREATE TABLE IF NOT EXISTS dead_letters (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        job_id TEXT NOT NULL,
        job TEXT NOT NULL,
        error TEXT NOT NULL,
        error_type TEXT NOT NULL,
        traceback TEXT,
        failed_at REAL NOT NULL,
        replayed_as TEXT,
        replayed_at REAL
    )""",
    """CREATE TABLE IF NOT EXISTS workflow_runs (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        state TEXT NOT NULL,
        input TEXT NOT NULL,
        output TEXT,
        error TEXT,
        started_at REAL NOT NULL,
        completed_at REAL
    )""",
    """CREATE INDEX IF NOT EXISTS workflow_runs_running ON workflow_runs (started_at)
        WHERE state = 'running'""",
    """CREATE TABLE IF NOT EXISTS workflow_steps (
        run_id TEXT NOT NULL,
        step TEXT NOT NULL,
        result TEXT NOT NULL,
        elapsed REAL NOT NULL,
        completed_at REAL NOT NULL,
        PRIMARY KEY (run_id, step)
    ) WITHOUT ROWID""",
)

_COLUMNS = (
    "seq, name, queue, payload, state, priority, max_retries, retry_count, last_error, "
    "run_at, created_at, started_at, completed_at, timeout"
)
_WAITING = "state IN ('pending', 'retrying')"
_STATES = {state.value: state for state in JobState}


def _job(row: Sequence[Any]) -> JobRecord:
    return JobRecord(
        str(row[0]),
        row[1],
        row[3],
        queue=row[2],
        state=_STATES[row[4]],
        priority=row[5],
        max_retries=row[6],
        retry_count=row[7],
        last_error=row[8],
        run_at=row[9],
        created_at=row[10],
        started_at=row[11],
        completed_at=row[12],
        timeout=row[13],
        seq=row[0],
    )


def _job_params(job: JobRecord) -> tuple[Any, ...]:
    return (
        job.name,
        job.queue,
        job.payload,
        job.state.value,
        job.priority,
        job.max_retries,
        job.retry_count,
        job.last_error,
        job.run_at,
        job.created_at,
        job.timeout,
    )


_INSERT = (
    "INSERT INTO jobs (name, queue, payload, state, priority, max_retries, retry_count, "
    "last_error, run_at, created_at, timeout) VALUES (?,?,?,?,?,?,?,?,?,?,?)"
)


class SQLiteStore:
    """Jobs, dead letters and workflow runs in one SQLite file (WAL).

    Args:
        path: The database file; created with its tables when missing. The default is
            ``dispatch.sqlite3`` in the current directory.
        busy_timeout: Seconds to wait for another process's write lock before trying
            again on a later loop iteration (the loop is never blocked longer).
        recover: Put jobs found ``running`` back in the queue when opening (what an
            engine starting up wants; a tool inspecting the file next to a running
            engine does not).
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = DEFAULT_DATABASE,
        *,
        busy_timeout: float = 0.05,
        recover: bool = True,
    ) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self.recover = recover
        self._conn: sqlite3.Connection | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writer: WriteQueue | None = None
        self._claim_sql: dict[int, str] = {}

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    # -- connection ---------------------------------------------------------------------

    async def open(self) -> int:
        if self._conn is not None:
            return 0
        self._loop = asyncio.get_running_loop()
        conn, recovered = await asyncio.to_thread(self._connect)
        self._conn = conn
        self._writer = WriteQueue(conn, self._loop, self.path)
        self._writer.start_checkpointer()
        return recovered

    def _connect(self) -> tuple[sqlite3.Connection, int]:
        try:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise OSError(
                f"cannot open the SQLite store {str(self.path)!r}: {exc}; check that the "
                "directory exists and is writable"
            ) from exc
        try:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                logger.warning("SQLite store %s: WAL mode unavailable (%s)", self.path, mode)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
            recovered = 0
            if self.recover:
                recovered = conn.execute(
                    "UPDATE jobs SET state = 'pending', started_at = NULL WHERE state = 'running'"
                ).rowcount
            conn.execute("COMMIT")
            conn.execute(f"PRAGMA busy_timeout={max(0, int(self.busy_timeout * 1000))}")
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise OSError(f"cannot use {str(self.path)!r} as a dispatch-ext store: {exc}") from exc
        if recovered:
            logger.warning(
                "SQLite store %s: %d job(s) found running at start-up went back to the queue",
                self.path,
                recovered,
            )
        return conn, recovered

    async def close(self) -> None:
        writer, self._writer, self._conn = self._writer, None, None
        if writer is not None:
            await writer.close()

    # -- writing ----------------------------------------------------------------------

    def _submit(
        self, fn: Callable[..., Any], arg: Any, batch: bool = False, wait: bool = True
    ) -> asyncio.Future[Any]:
        writer = self._writer
        if writer is None:
            raise RuntimeError(f"{self!r} is not open; use it through an Engine")
        return writer.submit(fn, arg, batch=batch, wait=wait)

    # -- jobs ---------------------------------------------------------------------------

    async def add_job(self, job: JobRecord) -> None:
        await self._submit(_insert_jobs, job, True)

    async def claim(self, names: Collection[str], limit: int, now: float) -> list[JobRecord]:
        if not names or limit <= 0:
            return []
        sql = self._claim_sql.get(len(names))
        if sql is None:
            marks = ",".join("?" * len(names))
            sql = self._claim_sql[len(names)] = (
                f"UPDATE jobs SET state = 'running', started_at = ? WHERE seq IN ("
                f"SELECT seq FROM jobs WHERE {_WAITING} AND run_at <= ? AND name IN ({marks}) "
                f"ORDER BY priority DESC, run_at, seq LIMIT ?) RETURNING {_COLUMNS}"
            )
        params = (now, now, *names, limit)
        jobs: list[JobRecord] = await self._submit(_claim, (sql, params))
        return jobs

    async def release(self, jobs: Sequence[JobRecord]) -> None:
        if jobs:
            await self._submit(_release, [job.seq for job in jobs])

    def complete(self, job: JobRecord) -> Awaitable[None]:
        return self._submit(_complete, (job.completed_at, job.seq), True, wait=False)

    async def retry(self, job: JobRecord) -> None:
        await self._submit(
            _retry, (job.state.value, job.retry_count, job.last_error, job.run_at, job.seq)
        )

    async def bury(self, job: JobRecord, error: str, error_type: str, traceback: str | None) -> int:
        entry_id: int = await self._submit(_bury, (job, error, error_type, traceback))
        return entry_id

    async def get_job(self, job_id: str) -> JobRecord | None:
        try:
            seq = int(job_id)
        except (TypeError, ValueError):
            return None
        row = await self._submit(_fetchone, (f"SELECT {_COLUMNS} FROM jobs WHERE seq = ?", (seq,)))
        return None if row is None else _job(row)

    async def next_run_at(self, names: Collection[str]) -> float | None:
        if not names:
            return None
        marks = ",".join("?" * len(names))
        row = await self._submit(
            _fetchone,
            (f"SELECT MIN(run_at) FROM jobs WHERE {_WAITING} AND name IN ({marks})", tuple(names)),
        )
        return None if row is None else row[0]

    async def count_active(self, names: Collection[str]) -> int:
        if not names:
            return 0
        marks = ",".join("?" * len(names))
        row = await self._submit(
            _fetchone,
            (
                "SELECT COUNT(*) FROM jobs WHERE state IN ('pending', 'retrying', 'running') "
                f"AND name IN ({marks})",
                tuple(names),
            ),
        )
        return int(row[0])

    async def counts(self) -> dict[str, int]:
        rows = await self._submit(
            _fetchall, ("SELECT state, COUNT(*) FROM jobs GROUP BY state", ())
        )
        found = dict(rows)
        return {state.value: int(found.get(state.value, 0)) for state in JobState}

    async def prune(self, before: float) -> int:
        count: int = await self._submit(
            _rowcount,
            (
                # The newest row stays, so that sequence numbers (job ids) never come back.
                "DELETE FROM jobs WHERE state = 'completed' AND completed_at < ? "
                "AND seq < (SELECT MAX(seq) FROM jobs)",
                (before,),
            ),
        )
        return count

    # -- dead letters -------------------------------------------------------------------

    async def list_dead(self, limit: int, include_replayed: bool) -> list[DeadLetter]:
        where = "" if include_replayed else "WHERE replayed_as IS NULL"
        rows = await self._submit(
            _fetchall,
            (
                f"SELECT id, job, error, error_type, traceback, failed_at, replayed_as "
                f"FROM dead_letters {where} ORDER BY id DESC LIMIT ?",
                (limit,),
            ),
        )
        return [_dead_letter(row) for row in rows]

    async def get_dead(self, entry_id: int) -> DeadLetter | None:
        row = await self._submit(
            _fetchone,
            (
                "SELECT id, job, error, error_type, traceback, failed_at, replayed_as "
                "FROM dead_letters WHERE id = ?",
                (entry_id,),
            ),
        )
        return None if row is None else _dead_letter(row)

    async def replay_dead(self, entry_id: int, job: JobRecord) -> None:
        await self._submit(_replay, (entry_id, job))

    # -- workflows ----------------------------------------------------------------------

    async def add_run(self, run: RunRecord) -> None:
        await self._submit(
            _rowcount,
            (
                "INSERT INTO workflow_runs (id, name, state, input, started_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (run.id, run.name, run.state.value, run.input, run.started_at),
            ),
        )

    async def finish_run(self, run: RunRecord) -> None:
        await self._submit(
            _rowcount,
            (
                "UPDATE workflow_runs SET state = ?, output = ?, error = ?, completed_at = ? "
                "WHERE id = ?",
                (run.state.value, run.output, run.error, run.completed_at, run.id),
            ),
        )

    async def get_run(self, run_id: str) -> RunRecord | None:
        row = await self._submit(
            _fetchone,
            (
                "SELECT id, name, state, input, output, error, started_at, completed_at "
                "FROM workflow_runs WHERE id = ?",
                (run_id,),
            ),
        )
        return None if row is None else _run(row)

    async def running_runs(self, names: Collection[str]) -> list[RunRecord]:
        if not names:
            return []
        marks = ",".join("?" * len(names))
        rows = await self._submit(
            _fetchall,
            (
                "SELECT id, name, state, input, output, error, started_at, completed_at "
                f"FROM workflow_runs WHERE state = 'running' AND name IN ({marks}) "
                "ORDER BY started_at",
                tuple(names),
            ),
        )
        return [_run(row) for row in rows]

    async def save_step(self, run_id: str, step: str, result: str, elapsed: float) -> None:
        await self._submit(
            _rowcount,
            (
                "INSERT OR REPLACE INTO workflow_steps (run_id, step, result, elapsed, "
                "completed_at) VALUES (?, ?, ?, ?, ?)",
                (run_id, step, result, elapsed, time.time()),
            ),
        )

    async def load_steps(self, run_id: str) -> dict[str, str]:
        rows = await self._submit(
            _fetchall, ("SELECT step, result FROM workflow_steps WHERE run_id = ?", (run_id,))
        )
        return dict(rows)


# -- statements (run inside the flush transaction) -------------------------------------


def _insert_jobs(conn: sqlite3.Connection, jobs: list[JobRecord]) -> None:
    """Insert jobs; each gets its sequence number, which is also its id."""
    if len(jobs) == 1:
        seq = conn.execute(_INSERT, _job_params(jobs[0])).lastrowid or 0
        jobs[0].seq, jobs[0].id = seq, str(seq)
        return
    conn.executemany(_INSERT, [_job_params(job) for job in jobs])
    # The transaction holds the write lock, so the new rows are the last ones, in order.
    last = conn.execute("SELECT MAX(seq) FROM jobs").fetchone()[0]
    for seq, job in enumerate(jobs, start=last - len(jobs) + 1):
        job.seq, job.id = seq, str(seq)


def _claim(conn: sqlite3.Connection, arg: tuple[str, tuple[Any, ...]]) -> list[JobRecord]:
    jobs = [_job(row) for row in conn.execute(*arg)]
    if len(jobs) > 1:
        jobs.sort(key=lambda job: (-job.priority, job.run_at, job.seq))
    return jobs


def _release(conn: sqlite3.Connection, seqs: list[int]) -> None:
    conn.executemany(
        "UPDATE jobs SET state = 'pending', started_at = NULL WHERE seq = ? AND state = 'running'",
        [(seq,) for seq in seqs],
    )


def _complete(conn: sqlite3.Connection, params: list[tuple[float, int]]) -> None:
    conn.executemany("UPDATE jobs SET state = 'completed', completed_at = ? WHERE seq = ?", params)


def _retry(conn: sqlite3.Connection, params: tuple[Any, ...]) -> None:
    conn.execute(
        "UPDATE jobs SET state = ?, retry_count = ?, last_error = ?, run_at = ?, "
        "started_at = NULL WHERE seq = ?",
        params,
    )


def _bury(conn: sqlite3.Connection, arg: tuple[JobRecord, str, str, str | None]) -> int:
    job, error, error_type, traceback = arg
    conn.execute(
        "UPDATE jobs SET state = 'dead', retry_count = ?, last_error = ?, completed_at = ? "
        "WHERE seq = ?",
        (job.retry_count, job.last_error, job.completed_at, job.seq),
    )
    cursor = conn.execute(
        "INSERT INTO dead_letters (job_id, job, error, error_type, traceback, failed_at) "
        "VALUES (?, ?, ?, ?, ?, ?)",
        (job.id, _job_json(job), error, error_type, traceback, job.completed_at),
    )
    return cursor.lastrowid or 0


def _replay(conn: sqlite3.Connection, arg: tuple[int, JobRecord]) -> None:
    entry_id, job = arg
    _insert_jobs(conn, [job])
    conn.execute(
        "UPDATE dead_letters SET replayed_as = ?, replayed_at = ? WHERE id = ?",
        (job.id, job.created_at, entry_id),
    )


def _fetchone(conn: sqlite3.Connection, arg: tuple[str, tuple[Any, ...]]) -> Any:
    return conn.execute(*arg).fetchone()


def _fetchall(conn: sqlite3.Connection, arg: tuple[str, tuple[Any, ...]]) -> list[Any]:
    return conn.execute(*arg).fetchall()


def _rowcount(conn: sqlite3.Connection, arg: tuple[str, tuple[Any, ...]]) -> int:
    return conn.execute(*arg).rowcount


def _job_json(job: JobRecord) -> str:
    return json.dumps(
        {
            "id": job.id,
            "name": job.name,
            "queue": job.queue,
            "payload": job.payload,
            "priority": job.priority,
            "max_retries": job.max_retries,
            "retry_count": job.retry_count,
            "last_error": job.last_error,
            "run_at": job.run_at,
            "created_at": job.created_at,
            "started_at": job.started_at,
            "completed_at": job.completed_at,
            "timeout": job.timeout,
        }
    )


def job_from_json(text: str) -> JobRecord:
    """Inverse of the snapshot kept with a dead letter."""
    data = json.loads(text)
    return JobRecord(
        data["id"],
        data["name"],
        data["payload"],
        queue=data["queue"],
        state=JobState.DEAD,
        priority=data["priority"],
        max_retries=data["max_retries"],
        retry_count=data["retry_count"],
        last_error=data["last_error"],
        run_at=data["run_at"],
        created_at=data["created_at"],
        started_at=data["started_at"],
        completed_at=data["completed_at"],
        timeout=data["timeout"],
    )


def _dead_letter(row: Sequence[Any]) -> DeadLetter:
    return DeadLetter(
        id=row[0],
        job=job_from_json(row[1]).snapshot(),
        error=row[2],
        error_type=row[3],
        traceback=row[4],
        failed_at=to_datetime(row[5]),
        replayed_as=row[6],
    )


def _run(row: Sequence[Any]) -> RunRecord:
    return RunRecord(
        id=row[0],
        name=row[1],
        state=RunState(row[2]),
        input=row[3],
        output=row[4],
        error=row[5],
        started_at=row[6],
        completed_at=row[7],
    )
