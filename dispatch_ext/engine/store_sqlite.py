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

Several processes may share the file: each write transaction takes SQLite's write lock
(``BEGIN IMMEDIATE``), so a job is claimed by one worker only, and a worker waiting for
the lock tries again on a later loop iteration rather than blocking the loop. Workers
and their heartbeats live in the ``workers`` table (see :mod:`dispatch_ext.engine.lease`).

Every write that ends a job's or a workflow run's attempt (a completion, a retry, a
burial, a step checkpoint, a run's end) is *fenced*: it applies only while the job or
run is still ``running`` under the same claim by the same worker, in the same
statement; a write that lost that race (its worker's lease ran out and another worker
took over) changes nothing, and the caller learns so from the result.

A file that holds tables but no ``meta`` table of a dispatch-ext store is somebody
else's database: it is refused, and nothing is written to it.
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
from .errors import NotAStoreError, StoreError
from .lease import Recovery, WorkerIdentity, gone_reason
from .records import DeadLetter, JobRecord, RunRecord, to_datetime
from .sqlite_writer import WriteQueue

__all__ = ["DEFAULT_DATABASE", "SQLiteStore"]

logger = logging.getLogger("dispatch_ext.engine")

DEFAULT_DATABASE = "dispatch.sqlite3"
"""The default database file, relative to the current directory."""

SCHEMA_VERSION = 3

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
        timeout REAL,
        owner TEXT
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
        completed_at REAL,
        owner TEXT,
        claims INTEGER NOT NULL DEFAULT 0
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
    """CREATE TABLE IF NOT EXISTS workers (
        id TEXT PRIMARY KEY NOT NULL,
        pid INTEGER NOT NULL,
        hostname TEXT NOT NULL,
        node TEXT NOT NULL,
        token TEXT,
        started_at REAL NOT NULL,
        heartbeat_at REAL NOT NULL,
        lease_timeout REAL
    )""",
    """CREATE TABLE IF NOT EXISTS cron_fires (
        name TEXT PRIMARY KEY NOT NULL,
        fire_at REAL NOT NULL
    )""",
)

# Columns added since schema version 1: (table, column, definition).
_ADDED_COLUMNS = (
    ("jobs", "owner", "TEXT"),  # version 2
    ("workflow_runs", "owner", "TEXT"),  # version 2
    ("workflow_runs", "claims", "INTEGER NOT NULL DEFAULT 0"),  # version 2
    ("workers", "lease_timeout", "REAL"),  # version 3: each worker's own lease
)

_COLUMNS = (
    "seq, name, queue, payload, state, priority, max_retries, retry_count, last_error, "
    "run_at, created_at, started_at, completed_at, timeout"
)
_WAITING = "state IN ('pending', 'retrying')"
# Fencing: a job's attempt is its worker (owner) and its claim time (started_at, set by
# every claim), so that a worker that registered again after losing its lease cannot
# finish an attempt it no longer holds.
_HELD = "state = 'running' AND owner = ? AND started_at = ?"
_RUN_HELD = "state = 'running' AND owner = ? AND claims = ?"
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

    Opening the store changes no job: an engine that only enqueues (a producer) never
    touches the jobs other processes run. Several engines may share the file.

    Args:
        path: The database file. The default is ``dispatch.sqlite3`` in the current
            directory.
        busy_timeout: Seconds to wait for another process's write lock before trying
            again on a later loop iteration (the loop is never blocked longer).
        create: Create the file and its tables when missing (an empty file is fine too).
            With ``create=False`` (tools that read a store) a missing file, an empty one
            or one without the store's tables is refused and nothing is written.

    Raises (when opened):
        NotAStoreError: the file holds tables but is not a dispatch-ext store.
        StoreError: the file cannot be opened or is not a SQLite database.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] = DEFAULT_DATABASE,
        *,
        busy_timeout: float = 0.05,
        create: bool = True,
    ) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self.create = create
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

    async def open(self) -> None:
        if self._conn is not None:
            return
        self._loop = asyncio.get_running_loop()
        conn = await asyncio.to_thread(self._connect)
        self._conn = conn
        self._writer = WriteQueue(conn, self._loop, self.path)
        self._writer.start_checkpointer()

    def _connect(self) -> sqlite3.Connection:
        name = str(self.path)
        if not self.create and not self.path.is_file():
            raise StoreError(f"no dispatch-ext store at {name!r}: the file does not exist")
        try:
            if self.create:
                conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            else:  # never create the file
                uri = f"{self.path.absolute().as_uri()}?mode=rw"
                conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise StoreError(
                f"cannot open the SQLite store {name!r}: {exc}; check that the directory "
                "exists and is writable"
            ) from exc
        try:
            self._check_kind(conn)
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                logger.warning("SQLite store %s: WAL mode unavailable (%s)", self.path, mode)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=5000")
            if self.create:
                conn.execute("BEGIN IMMEDIATE")
                _create_schema(conn)
                conn.execute("COMMIT")
            conn.execute(f"PRAGMA busy_timeout={max(0, int(self.busy_timeout * 1000))}")
        except StoreError:
            conn.close()
            raise
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise StoreError(f"cannot use {name!r} as a dispatch-ext store: {exc}") from exc
        return conn

    def _check_kind(self, conn: sqlite3.Connection) -> None:
        """Refuse somebody else's database, or a store of a newer schema, before writing."""
        name = str(self.path)
        tables = sorted(
            row[0]
            for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if not str(row[0]).startswith("sqlite_")
        )
        if not tables and self.create:
            return  # a new or empty file: the engine makes it its store
        version = _schema_version(conn) if "meta" in tables and "jobs" in tables else None
        if version is None:
            held = f"; it holds {_listing(tables)}" if tables else "; the database is empty"
            what = (
                "its 'meta' table is not a dispatch-ext one"
                if "meta" in tables
                else "no 'meta' table"
            )
            advice = (
                "give the engine a database file of its own (a new or empty one)"
                if self.create
                else "pass the engine's database file"
            )
            raise NotAStoreError(
                f"{name} is not a dispatch-ext store ({what}{held}); {advice}", name
            )
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{name} is a dispatch-ext store of schema version {version}, newer than "
                f"this dispatch-ext knows ({SCHEMA_VERSION}); upgrade dispatch-ext"
            )

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

    async def claim(
        self, names: Collection[str], limit: int, now: float, owner: str | None = None
    ) -> list[JobRecord]:
        if not names or limit <= 0:
            return []
        sql = self._claim_sql.get(len(names))
        if sql is None:
            marks = ",".join("?" * len(names))
            sql = self._claim_sql[len(names)] = (
                f"UPDATE jobs SET state = 'running', started_at = ?, owner = ? WHERE seq IN ("
                f"SELECT seq FROM jobs WHERE {_WAITING} AND run_at <= ? AND name IN ({marks}) "
                f"ORDER BY priority DESC, run_at, seq LIMIT ?) RETURNING {_COLUMNS}"
            )
        params = (now, owner, now, *names, limit)
        jobs: list[JobRecord] = await self._submit(_claim, (sql, params))
        return jobs

    async def release(self, jobs: Sequence[JobRecord], owner: str) -> None:
        if jobs:
            await self._submit(_release, [(job.seq, owner, job.started_at) for job in jobs])

    def complete(self, job: JobRecord, owner: str) -> Awaitable[bool]:
        return self._submit(
            _complete, (job.completed_at, job.seq, owner, job.started_at), True, wait=False
        )

    async def retry(self, job: JobRecord, owner: str) -> bool:
        applied: bool = await self._submit(
            _retry,
            (
                job.state.value,
                job.retry_count,
                job.last_error,
                job.run_at,
                job.seq,
                owner,
                job.started_at,
            ),
        )
        return applied

    async def bury(
        self,
        job: JobRecord,
        error: str,
        error_type: str,
        traceback: str | None,
        owner: str,
    ) -> int | None:
        entry_id: int | None = await self._submit(_bury, (job, error, error_type, traceback, owner))
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

    async def waiting_names(self, before: float) -> list[str]:
        rows = await self._submit(
            _fetchall,
            (f"SELECT DISTINCT name FROM jobs WHERE {_WAITING} AND run_at < ?", (before,)),
        )
        return [row[0] for row in rows]

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

    # -- workers ------------------------------------------------------------------------

    async def beat(self, worker: WorkerIdentity, lease_timeout: float, now: float) -> Recovery:
        # Nobody needs the heartbeat at once: it joins the next commit.
        recovery: Recovery = await self._submit(_beat, (worker, lease_timeout, now), wait=False)
        return recovery

    async def leave(self, worker_id: str) -> None:
        await self._submit(_leave, worker_id)

    # -- workflows ----------------------------------------------------------------------

    async def add_run(self, run: RunRecord, owner: str | None = None) -> None:
        await self._submit(
            _rowcount,
            (
                "INSERT INTO workflow_runs (id, name, state, input, started_at, owner, claims) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    run.id,
                    run.name,
                    run.state.value,
                    run.input,
                    run.started_at,
                    owner,
                    0 if owner is None else 1,
                ),
            ),
        )

    async def claim_runs(
        self, names: Collection[str], owner: str, limit: int
    ) -> list[tuple[RunRecord, int]]:
        if not names or limit <= 0:
            return []
        marks = ",".join("?" * len(names))
        rows = await self._submit(
            _fetchall,
            (
                "UPDATE workflow_runs SET owner = ?, claims = claims + 1 WHERE id IN ("
                "SELECT id FROM workflow_runs WHERE state = 'running' AND owner IS NULL "
                f"AND name IN ({marks}) ORDER BY started_at LIMIT ?) RETURNING id, name, "
                "state, input, output, error, started_at, completed_at, claims",
                (owner, *names, limit),
            ),
        )
        claimed = [(_run(row), int(row[8])) for row in rows]
        claimed.sort(key=lambda item: item[0].started_at)
        return claimed

    async def count_active_runs(self, names: Collection[str]) -> int:
        if not names:
            return 0
        marks = ",".join("?" * len(names))
        row = await self._submit(
            _fetchone,
            (
                f"SELECT COUNT(*) FROM workflow_runs WHERE state = 'running' AND name IN ({marks})",
                tuple(names),
            ),
        )
        return int(row[0])

    async def finish_run(self, run: RunRecord, owner: str, claim: int) -> bool:
        count: int = await self._submit(
            _rowcount,
            (
                "UPDATE workflow_runs SET state = ?, output = ?, error = ?, completed_at = ? "
                f"WHERE id = ? AND {_RUN_HELD}",
                (run.state.value, run.output, run.error, run.completed_at, run.id, owner, claim),
            ),
        )
        return count > 0

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

    async def save_step(
        self,
        run_id: str,
        step: str,
        result: str,
        elapsed: float,
        owner: str,
        claim: int,
    ) -> bool:
        count: int = await self._submit(
            _rowcount,
            (
                "INSERT OR REPLACE INTO workflow_steps (run_id, step, result, elapsed, "
                "completed_at) SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM "
                f"workflow_runs WHERE id = ? AND {_RUN_HELD})",
                (run_id, step, result, elapsed, time.time(), run_id, owner, claim),
            ),
        )
        return count > 0

    async def load_steps(self, run_id: str) -> dict[str, str]:
        rows = await self._submit(
            _fetchall, ("SELECT step, result FROM workflow_steps WHERE run_id = ?", (run_id,))
        )
        return dict(rows)

    # -- cron ---------------------------------------------------------------------------

    async def claim_fire(self, entry: str, fire_at: float) -> bool:
        count: int = await self._submit(
            _rowcount,
            (
                "INSERT INTO cron_fires (name, fire_at) VALUES (?, ?) ON CONFLICT (name) "
                "DO UPDATE SET fire_at = excluded.fire_at WHERE excluded.fire_at > fire_at",
                (entry, fire_at),
            ),
        )
        return count > 0


# -- opening ---------------------------------------------------------------------------


def _schema_version(conn: sqlite3.Connection) -> int | None:
    """The version a store's ``meta`` table records; ``None`` when it is not ours."""
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    except sqlite3.OperationalError:  # somebody else's "meta" table
        return None
    try:
        return None if row is None else int(row[0])
    except (TypeError, ValueError):
        return None


def _create_schema(conn: sqlite3.Connection) -> None:
    """Create the tables (or add what an older version of the store lacks)."""
    for statement in _SCHEMA:
        conn.execute(statement)
    for table, column, definition in _ADDED_COLUMNS:
        columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if column not in columns:
            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
            if column == "claims":  # runs of an older store were all taken by an engine
                conn.execute("UPDATE workflow_runs SET claims = 1")
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
        (str(SCHEMA_VERSION),),
    )


def _listing(tables: list[str]) -> str:
    shown = ", ".join(repr(t) for t in tables[:5])
    more = f" and {len(tables) - 5} more" if len(tables) > 5 else ""
    return f"other tables ({shown}{more})" if len(tables) > 1 else f"another table ({shown})"


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


def _release(conn: sqlite3.Connection, params: list[tuple[int, str | None, float | None]]) -> None:
    conn.executemany(
        "UPDATE jobs SET state = 'pending', started_at = NULL, owner = NULL "
        f"WHERE seq = ? AND {_HELD}",
        params,
    )


_ORPHAN_JOBS = (
    "UPDATE jobs SET state = 'pending', started_at = NULL, owner = NULL WHERE state = 'running' "
    "AND (owner IS NULL OR owner NOT IN (SELECT id FROM workers))"
)
_ORPHAN_RUNS = (
    "UPDATE workflow_runs SET owner = NULL WHERE state = 'running' AND owner IS NOT NULL "
    "AND owner NOT IN (SELECT id FROM workers)"
)


def _beat(conn: sqlite3.Connection, arg: tuple[WorkerIdentity, float, float]) -> Recovery:
    """Refresh (or add) this worker's row, then free what gone workers held."""
    me, lease_timeout, now = arg
    rejoined = (
        conn.execute("UPDATE workers SET heartbeat_at = ? WHERE id = ?", (now, me.id)).rowcount == 0
    )
    if rejoined:
        conn.execute(
            "INSERT INTO workers (id, pid, hostname, node, token, started_at, heartbeat_at, "
            "lease_timeout) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (me.id, me.pid, me.hostname, me.node, me.token, now, now, lease_timeout),
        )
    gone: list[tuple[str, str]] = []
    others = conn.execute(
        "SELECT id, pid, hostname, node, token, heartbeat_at, lease_timeout FROM workers "
        "WHERE id != ?",
        (me.id,),
    ).fetchall()
    for worker_id, pid, hostname, node, token, heartbeat_at, lease in others:
        # Each worker is judged by its own lease; a row without one (written by an older
        # version) by this worker's.
        own = lease_timeout if lease is None else lease
        reason = gone_reason(me, pid, node, token, heartbeat_at, now, own)
        if reason is not None:
            gone.append(
                (worker_id, f"worker {worker_id} (pid {pid} on {hostname}) is gone: {reason}")
            )
    if gone:
        conn.executemany(
            "DELETE FROM workers WHERE id = ?", [(worker_id,) for worker_id, _ in gone]
        )
    jobs = conn.execute(_ORPHAN_JOBS).rowcount
    runs = conn.execute(_ORPHAN_RUNS).rowcount
    return Recovery(jobs, runs, tuple(text for _, text in gone), rejoined)


def _leave(conn: sqlite3.Connection, worker_id: str) -> None:
    conn.execute(
        "UPDATE jobs SET state = 'pending', started_at = NULL, owner = NULL "
        "WHERE state = 'running' AND owner = ?",
        (worker_id,),
    )
    conn.execute(
        "UPDATE workflow_runs SET owner = NULL WHERE state = 'running' AND owner = ?",
        (worker_id,),
    )
    conn.execute("DELETE FROM workers WHERE id = ?", (worker_id,))


_COMPLETE = f"UPDATE jobs SET state = 'completed', completed_at = ? WHERE seq = ? AND {_HELD}"
_COMPLETED = (
    "SELECT 1 FROM jobs WHERE completed_at = ? AND seq = ? AND owner = ? AND started_at = ?"
)


def _complete(conn: sqlite3.Connection, params: list[tuple[Any, ...]]) -> list[bool]:
    """Complete the jobs still held; one result per job: whether it was applied."""
    if len(params) == 1:
        return [conn.execute(_COMPLETE, params[0]).rowcount > 0]
    if conn.executemany(_COMPLETE, params).rowcount == len(params):
        return [True] * len(params)
    # Some were fenced off (rare): an applied row now carries this completion's time.
    return [conn.execute(_COMPLETED, row).fetchone() is not None for row in params]


def _retry(conn: sqlite3.Connection, params: tuple[Any, ...]) -> bool:
    return (
        conn.execute(
            "UPDATE jobs SET state = ?, retry_count = ?, last_error = ?, run_at = ?, "
            f"started_at = NULL, owner = NULL WHERE seq = ? AND {_HELD}",
            params,
        ).rowcount
        > 0
    )


def _bury(conn: sqlite3.Connection, arg: tuple[Any, ...]) -> int | None:
    job, error, error_type, traceback, owner = arg
    held = conn.execute(
        "UPDATE jobs SET state = 'dead', retry_count = ?, last_error = ?, completed_at = ? "
        f"WHERE seq = ? AND {_HELD}",
        (job.retry_count, job.last_error, job.completed_at, job.seq, owner, job.started_at),
    ).rowcount
    if not held:
        return None
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
