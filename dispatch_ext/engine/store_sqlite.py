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
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from ..models import JobState, RunState
from .records import DeadLetter, JobRecord, RunRecord, to_datetime

__all__ = ["DEFAULT_DATABASE", "SQLiteStore"]

logger = logging.getLogger("dispatch_ext.engine")

DEFAULT_DATABASE = "dispatch.sqlite3"
"""The default database file, relative to the current directory."""

SCHEMA_VERSION = 1

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS jobs (
        seq INTEGER PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
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
    "seq, id, name, queue, payload, state, priority, max_retries, retry_count, last_error, "
    "run_at, created_at, started_at, completed_at, timeout"
)
_WAITING = "state IN ('pending', 'retrying')"
_STATES = {state.value: state for state in JobState}

_Op = tuple[Callable[..., Any], Any, "asyncio.Future[Any]", bool]


def _job(row: Sequence[Any]) -> JobRecord:
    return JobRecord(
        row[1],
        row[2],
        row[4],
        queue=row[3],
        state=_STATES[row[5]],
        priority=row[6],
        max_retries=row[7],
        retry_count=row[8],
        last_error=row[9],
        run_at=row[10],
        created_at=row[11],
        started_at=row[12],
        completed_at=row[13],
        timeout=row[14],
        seq=row[0],
    )


def _job_params(job: JobRecord) -> tuple[Any, ...]:
    return (
        job.id,
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
    "INSERT INTO jobs (id, name, queue, payload, state, priority, max_retries, retry_count, "
    "last_error, run_at, created_at, timeout) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
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
        self._ops: list[_Op] = []
        self._scheduled = False
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
        if self._conn is None:
            return
        while self._ops:
            self._flush()
            if self._ops:  # another process holds the write lock: wait a little
                await asyncio.sleep(0.01)
        conn, self._conn = self._conn, None
        conn.close()

    # -- the write queue ----------------------------------------------------------------

    def _submit(self, fn: Callable[..., Any], arg: Any, batch: bool = False) -> asyncio.Future[Any]:
        loop = self._loop
        if self._conn is None or loop is None:
            raise RuntimeError(f"{self!r} is not open; use it through an Engine")
        future = loop.create_future()
        self._ops.append((fn, arg, future, batch))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)
        return future

    def _flush(self) -> None:
        self._scheduled = False
        ops, conn = self._ops, self._conn
        if not ops or conn is None:
            return
        self._ops = []
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                self._ops = ops + self._ops
                self._retry_later()
                return
            self._fail(ops, exc)
            return
        try:
            results = self._apply(conn, ops)
            conn.execute("COMMIT")
        except Exception as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if len(ops) == 1:
                self._fail(ops, exc)
            else:  # isolate the faulty change: write the others one by one
                for op in ops:
                    self._ops.append(op)
                    self._flush()
            return
        for (_, _, future, _), result in zip(ops, results, strict=True):
            if not future.done():
                future.set_result(result)

    def _retry_later(self) -> None:
        if not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_later(0.01, self._flush)

    @staticmethod
    def _fail(ops: list[_Op], exc: BaseException) -> None:
        for _, _, future, _ in ops:
            if not future.done():
                future.set_exception(exc)

    @staticmethod
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
            fn(conn, [op[1] for op in ops[i:j]])
            results.extend([None] * (j - i))
            i = j
        return results

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

    async def complete(self, job: JobRecord) -> None:
        await self._submit(_complete, (job.completed_at, job.seq), True)

    async def retry(self, job: JobRecord) -> None:
        await self._submit(
            _retry, (job.state.value, job.retry_count, job.last_error, job.run_at, job.seq)
        )

    async def bury(self, job: JobRecord, error: str, error_type: str, traceback: str | None) -> int:
        entry_id: int = await self._submit(_bury, (job, error, error_type, traceback))
        return entry_id

    async def get_job(self, job_id: str) -> JobRecord | None:
        row = await self._submit(
            _fetchone, (f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        )
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
            ("DELETE FROM jobs WHERE state = 'completed' AND completed_at < ?", (before,)),
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
    if len(jobs) == 1:
        cursor = conn.execute(_INSERT, _job_params(jobs[0]))
        jobs[0].seq = cursor.lastrowid or 0
        return
    conn.executemany(_INSERT, [_job_params(job) for job in jobs])
    # executemany leaves lastrowid unset; the rows are contiguous only without concurrent
    # writers, so look the sequence numbers up (needed to complete the jobs by seq).
    first = conn.execute("SELECT seq FROM jobs WHERE id = ?", (jobs[0].id,)).fetchone()[0]
    last = conn.execute("SELECT seq FROM jobs WHERE id = ?", (jobs[-1].id,)).fetchone()[0]
    if last - first == len(jobs) - 1:
        for offset, job in enumerate(jobs):
            job.seq = first + offset
    else:  # pragma: no cover - the transaction holds the write lock, so rows are contiguous
        for job in jobs:
            job.seq = conn.execute("SELECT seq FROM jobs WHERE id = ?", (job.id,)).fetchone()[0]


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
