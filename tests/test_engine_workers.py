"""Several processes on one SQLite store: producers, workers, leases and recovery.

Workers run in real subprocesses on a real SQLite file; the test process is the
producer (an engine that enqueues and starts workflow runs but is never started).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from dispatch_ext import WorkflowRun
from dispatch_ext.config import Config
from dispatch_ext.engine import Engine, SQLiteStore

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL and SIGSTOP")

WORKER = textwrap.dedent(
    """
    import asyncio, logging, os, signal, sys, time

    from dispatch_ext.config import Config
    from dispatch_ext.engine import Engine, SQLiteStore

    db, log, lease = sys.argv[1], sys.argv[2], float(sys.argv[3])
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    PID = os.getpid()


    def write(*parts):
        os.write(fd, (" ".join(str(p) for p in (*parts, PID)) + "\\n").encode())


    def wait_for_file(path):
        while path and not os.path.exists(path):
            time.sleep(0.01)


    class ToLog(logging.Handler):
        def emit(self, record):
            write("log", record.getMessage().replace("\\n", " "))


    logging.basicConfig(level=logging.WARNING, handlers=[logging.StreamHandler(), ToLog()])


    class Hooks:
        def on_job_completed(self, job):
            write("job-completed", job.id)

        def on_job_retrying(self, job):
            write("job-retrying", job.id)

        def on_job_failed(self, job):
            write("job-failed", job.id)

        def on_job_dlq(self, job):
            write("job-dlq", job.id)

        def on_workflow_started(self, run):
            write("hook-started", run.id)

        def on_workflow_step_completed(self, run, step):
            write("hook-step", run.id, step)

        def on_workflow_completed(self, run):
            write("hook-completed", run.id)


    engine = Engine(
        store=SQLiteStore(db), extensions=[Hooks()], autoload=False, concurrency=4,
        config=Config(
            autoload=False, raw={"engine": {"lease_timeout": lease, "poll_interval": 0.05}}
        ),
    )


    @engine.job("work", max_retries=0)
    def work(payload):
        write("start", payload["n"])
        wait_for_file(payload.get("block"))
        time.sleep(payload.get("sleep", 0.001))
        write("end", payload["n"])


    @engine.job("attempt", max_retries=0, backoff=0)
    def attempt(payload):
        n = 1
        while True:  # number the attempts across processes
            try:
                os.close(os.open(f"{payload['dir']}/attempt-{n}", os.O_CREAT | os.O_EXCL))
                break
            except FileExistsError:
                n += 1
        write("attempt", n)
        wait_for_file(f"{payload['dir']}/go-{n}")
        write("attempt-end", n)
        if n == 1:
            raise RuntimeError("the first attempt fails")


    def step(name, n, block=None):
        write("step", name, n)
        wait_for_file(block)
        return f"{name}-{n}"


    @engine.workflow("flow")
    async def flow(wf, payload):
        one = await wf.step("one", step, "one", payload["n"])
        two = await wf.step("two", step, "two", payload["n"], payload.get("block"))
        return [one, two]


    async def main():
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with engine:
            write("ready", engine.worker_id)
            await stop.wait()


    asyncio.run(main())
    """
)


class Cluster:
    """Worker subprocesses on one store, and their shared log."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.db = tmp_path / "shared.sqlite3"
        self.log = tmp_path / "log.txt"
        self.script = tmp_path / "worker.py"
        self.script.write_text(WORKER)
        self.procs: list[subprocess.Popen[str]] = []

    def start(self, lease: float = 30.0) -> tuple[subprocess.Popen[str], str]:
        """Start a worker; return it with its worker id once it is started."""
        proc = subprocess.Popen(
            [sys.executable, str(self.script), str(self.db), str(self.log), str(lease)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "DISPATCH_EXT_AUTOLOAD": "0"},
        )
        self.procs.append(proc)
        self.wait(
            lambda: any(line[0] == "ready" and line[2] == str(proc.pid) for line in self.lines())
        )
        ready = next(
            line for line in self.lines() if line[0] == "ready" and line[2] == str(proc.pid)
        )
        return proc, ready[1]

    def lines(self) -> list[list[str]]:
        if not self.log.exists():
            return []
        return [line.split() for line in self.log.read_text().splitlines() if line.strip()]

    def of(self, kind: str) -> list[list[str]]:
        return [line for line in self.lines() if line[0] == kind]

    def wait(self, check: Callable[[], bool], what: str = "the workers") -> None:
        deadline = time.monotonic() + 60
        while not check():
            for proc in self.procs:
                if proc.poll() is not None and proc.returncode != -signal.SIGKILL:
                    raise AssertionError(f"a worker exited early: {proc.communicate()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {self.lines()}")
            time.sleep(0.01)

    def stop(self, proc: subprocess.Popen[str]) -> str:
        """SIGTERM (a graceful shutdown); return the worker's stderr."""
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        return err

    def kill(self, proc: subprocess.Popen[str]) -> None:
        os.kill(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=30)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=30)

    def rows(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        with closing(sqlite3.connect(self.db)) as conn:
            return list(conn.execute(sql, params))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    found = Cluster(tmp_path)
    try:
        yield found
    finally:
        found.close()


class StartedHooks:
    """The producer's extension: which workflow runs it heard start."""

    name = "producer-hooks"

    def __init__(self) -> None:
        self.started: list[str] = []

    def on_workflow_started(self, run: WorkflowRun) -> None:
        self.started.append(run.id)


def producer(db: Path, *extensions: object) -> Engine:
    """An engine that only enqueues: the same job and workflow names, never started."""
    engine = Engine(
        store=SQLiteStore(db), extensions=extensions, autoload=False, config=Config(autoload=False)
    )

    @engine.job("work")
    def work(payload: Any) -> None:
        raise AssertionError("a producer never runs jobs")

    @engine.job("attempt")
    def attempt(payload: Any) -> None:
        raise AssertionError("a producer never runs jobs")

    @engine.workflow("flow")
    async def flow(wf: Any, payload: Any) -> None:
        raise AssertionError("a producer never runs workflows")

    return engine


def enqueue(db: Path, *payloads: dict[str, Any]) -> list[str]:
    """Enqueue ``work`` jobs from a producer opened afresh, as another process would."""

    async def main() -> list[str]:
        engine = producer(db)
        try:
            return [(await engine.enqueue("work", payload)).id for payload in payloads]
        finally:
            await engine.stop()

    result: list[str] = asyncio.run(main())
    return result


def test_a_producer_leaves_the_jobs_a_worker_is_running_alone(cluster: Cluster) -> None:
    worker, worker_id = cluster.start()
    flag = cluster.tmp_path / "release-1"
    (first,) = enqueue(cluster.db, {"n": 1, "block": str(flag)})
    cluster.wait(lambda: len(cluster.of("start")) == 1, "job 1 to start")

    # Another process opens the store and enqueues: job 1 stays the worker's.
    (second,) = enqueue(cluster.db, {"n": 2})
    assert cluster.rows("SELECT state, owner FROM jobs WHERE seq = ?", int(first)) == [
        ("running", worker_id)
    ]
    cluster.wait(lambda: len(cluster.of("end")) >= 1, "job 2 to end")
    flag.touch()
    cluster.wait(lambda: len(cluster.of("end")) >= 2, "job 1 to end")
    cluster.stop(worker)

    assert sorted(line[1] for line in cluster.of("start")) == ["1", "2"]  # each ran once
    states = cluster.rows("SELECT state FROM jobs ORDER BY seq")
    assert states == [("completed",), ("completed",)]
    assert second != first


def test_two_workers_share_a_store_and_run_each_job_once(cluster: Cluster) -> None:
    first, first_id = cluster.start()
    flag = cluster.tmp_path / "release-0"
    enqueue(cluster.db, {"n": 0, "block": str(flag)})
    cluster.wait(lambda: len(cluster.of("start")) == 1, "job 0 to start")

    # A second worker starting on the file leaves the first one's running job alone.
    second, second_id = cluster.start()
    assert cluster.rows("SELECT state, owner FROM jobs WHERE seq = 1") == [("running", first_id)]
    workers = cluster.rows("SELECT id, pid, hostname FROM workers ORDER BY started_at")
    assert [(row[0], row[1]) for row in workers] == [
        (first_id, first.pid),
        (second_id, second.pid),
    ]
    assert all(row[2] for row in workers)

    enqueue(cluster.db, *({"n": n, "sleep": 0.01} for n in range(1, 201)))
    flag.touch()
    cluster.wait(lambda: len(cluster.of("end")) >= 201, "201 jobs to end")
    cluster.stop(first)
    cluster.stop(second)

    started = [int(line[1]) for line in cluster.of("start")]
    assert sorted(started) == list(range(201))  # every job once, none twice
    pids = {line[2] for line in cluster.of("end")}
    assert pids == {str(first.pid), str(second.pid)}  # both took part
    assert cluster.rows("SELECT state, COUNT(*) FROM jobs GROUP BY state") == [("completed", 201)]
    assert cluster.rows("SELECT COUNT(*) FROM workers") == [(0,)]  # clean stops leave no row


def test_a_running_worker_takes_over_a_killed_workers_job_and_run(cluster: Cluster) -> None:
    # The lease is long (a heartbeat every 2 s): the dead process explains the takeover.
    first, first_id = cluster.start(lease=12)
    job_flag, run_flag = cluster.tmp_path / "job-flag", cluster.tmp_path / "run-flag"
    (job_id,) = enqueue(cluster.db, {"n": 7, "block": str(job_flag)})
    hooks = StartedHooks()

    async def start_run() -> str:
        engine = producer(cluster.db, hooks)
        try:
            return (await engine.start_workflow("flow", {"n": 1, "block": str(run_flag)})).id
        finally:
            await engine.stop()

    run_id = asyncio.run(start_run())
    cluster.wait(
        lambda: bool(cluster.of("start")) and any(line[1] == "two" for line in cluster.of("step")),
        "job 7 and step two to start",
    )
    second, _ = cluster.start(lease=12)
    assert cluster.rows("SELECT owner FROM jobs WHERE seq = ?", int(job_id)) == [(first_id,)]
    assert cluster.rows("SELECT owner FROM workflow_runs") == [(first_id,)]

    cluster.kill(first)
    job_flag.touch()
    run_flag.touch()
    cluster.wait(
        lambda: (
            any(line[0] == "hook-completed" for line in cluster.lines())
            and any(line[0] == "end" for line in cluster.lines())
        ),
        "the second worker to finish the job and the run",
    )
    err = cluster.stop(second)
    assert f"worker {first_id} (pid {first.pid} on " in err
    assert ") is gone: its process has exited" in err
    assert "exited is gone" not in err

    by_second = [line for line in cluster.lines() if line[-1] == str(second.pid)]
    assert ["end", "7", str(second.pid)] in by_second
    # Step one was checkpointed before the kill: it neither ran nor emitted again.
    steps = [(line[1], line[-1]) for line in cluster.of("step")]
    assert steps == [("one", str(first.pid)), ("two", str(first.pid)), ("two", str(second.pid))]
    assert [line[:3] for line in by_second if line[0].startswith("hook-")] == [
        ["hook-step", run_id, "two"],
        ["hook-completed", run_id, str(second.pid)],
    ]
    assert hooks.started == [run_id]  # heard once, in the process that started the run
    assert not cluster.of("hook-started")
    assert cluster.rows("SELECT state, claims FROM workflow_runs") == [("completed", 2)]
    assert cluster.rows("SELECT id FROM workers") == []


def test_a_frozen_worker_loses_its_job_when_its_lease_runs_out(cluster: Cluster) -> None:
    first, first_id = cluster.start(lease=2.0)
    flag = cluster.tmp_path / "flag"
    enqueue(cluster.db, {"n": 3, "block": str(flag)})
    cluster.wait(lambda: len(cluster.of("start")) == 1, "job 3 to start")
    # The observer's own lease is longer: the frozen worker is judged by its own (2 s).
    second, _ = cluster.start(lease=12.0)

    os.kill(first.pid, signal.SIGSTOP)  # alive, but its heartbeat stops
    try:
        flag.touch()
        cluster.wait(
            lambda: ["end", "3", str(second.pid)] in cluster.lines(),
            "the second worker to take job 3 over",
        )
    finally:
        cluster.kill(first)
    err = cluster.stop(second)
    assert f"worker {first_id} (pid {first.pid} on " in err
    assert "no heartbeat for" in err
    assert "(lease 2 s)" in err
    assert [line[2] for line in cluster.of("start")] == [str(first.pid), str(second.pid)]


def test_a_short_lease_does_not_take_a_live_workers_jobs(cluster: Cluster) -> None:
    first, first_id = cluster.start(lease=30.0)  # a heartbeat every 5 s
    flag = cluster.tmp_path / "flag"
    (job_id,) = enqueue(cluster.db, {"n": 4, "block": str(flag)})
    cluster.wait(lambda: len(cluster.of("start")) == 1, "job 4 to start")
    second, second_id = cluster.start(lease=1.0)  # a heartbeat every 0.17 s

    time.sleep(2.5)  # the short lease ran out twice over since the first worker's heartbeat
    assert cluster.rows("SELECT state, owner FROM jobs WHERE seq = ?", int(job_id)) == [
        ("running", first_id)
    ]
    assert cluster.rows("SELECT id, lease_timeout FROM workers ORDER BY started_at") == [
        (first_id, 30.0),
        (second_id, 1.0),
    ]
    flag.touch()
    cluster.wait(lambda: bool(cluster.of("end")), "job 4 to end")
    err = cluster.stop(second) + cluster.stop(first)
    assert "is gone" not in err
    assert [line[2] for line in cluster.of("start")] == [str(first.pid)]  # it ran once


def enqueue_attempt(db: Path, directory: Path, max_retries: int) -> str:
    async def main() -> str:
        engine = producer(db)
        try:
            job = await engine.enqueue("attempt", {"dir": str(directory)}, max_retries=max_retries)
            return job.id
        finally:
            await engine.stop()

    result: str = asyncio.run(main())
    return result


@pytest.mark.parametrize("max_retries", [0, 1])
def test_a_stopped_worker_that_lost_its_lease_discards_its_result(
    cluster: Cluster, max_retries: int
) -> None:
    first, _ = cluster.start(lease=1.5)
    second, _ = cluster.start(lease=1.5)
    folder = cluster.tmp_path
    job_id = enqueue_attempt(cluster.db, folder, max_retries)
    cluster.wait(lambda: bool(cluster.of("attempt")), "attempt 1 to start")
    stalled = first if cluster.of("attempt")[0][2] == str(first.pid) else second
    other = second if stalled is first else first
    stalled_pid = str(stalled.pid)

    os.kill(stalled.pid, signal.SIGSTOP)  # past its lease: the other worker takes over
    try:
        cluster.wait(lambda: ["attempt", "2", str(other.pid)] in cluster.lines(), "the takeover")
    finally:
        (folder / "go-1").touch()  # the stalled attempt fails once it resumes
        os.kill(stalled.pid, signal.SIGCONT)

    def stalled_reported() -> bool:
        return any(
            line[-1] == stalled_pid
            and (line[0].startswith("job-") or (line[0] == "log" and "discarded" in line))
            for line in cluster.lines()
        )

    cluster.wait(stalled_reported, "the stalled worker to finish attempt 1")
    (folder / "go-2").touch()
    cluster.wait(lambda: bool(cluster.of("job-completed")), "attempt 2 to complete")
    for n in (3, 4):  # let any further attempt end, so that the workers stop at once
        (folder / f"go-{n}").touch()
    cluster.stop(first)
    cluster.stop(second)

    attempts = [(line[1], line[2]) for line in cluster.of("attempt")]
    assert attempts == [("1", stalled_pid), ("2", str(other.pid))]  # never two at once again
    hooks = [line for line in cluster.lines() if line[0].startswith("job-")]
    assert hooks == [["job-completed", job_id, str(other.pid)]]  # none for the lost attempt
    warnings = [" ".join(line[1:-1]) for line in cluster.of("log") if line[-1] == stalled_pid]
    assert any(
        text.startswith(
            f"job {job_id} ('attempt') was taken over by another worker after this worker's "
            "lease expired; its result (failed"
        )
        and text.endswith("is discarded")
        for text in warnings
    ), warnings
    assert cluster.rows("SELECT state, retry_count FROM jobs") == [("completed", 0)]
    assert cluster.rows("SELECT COUNT(*) FROM dead_letters") == [(0,)]


def test_workers_pick_up_runs_a_producer_starts_and_run_each_once(cluster: Cluster) -> None:
    first, _ = cluster.start()
    second, _ = cluster.start()
    hooks = StartedHooks()

    async def start_runs() -> list[str]:
        engine = producer(cluster.db, hooks)
        try:
            return [(await engine.start_workflow("flow", {"n": n})).id for n in range(12)]
        finally:
            await engine.stop()

    run_ids = asyncio.run(start_runs())
    cluster.wait(lambda: len(cluster.of("hook-completed")) >= 12, "12 runs to complete")
    cluster.stop(first)
    cluster.stop(second)

    steps = sorted((line[1], int(line[2])) for line in cluster.of("step"))
    assert steps == sorted([("one", n) for n in range(12)] + [("two", n) for n in range(12)])
    assert sorted(line[1] for line in cluster.of("hook-completed")) == sorted(run_ids)
    assert hooks.started == run_ids  # on_workflow_started: in the producer, once per run
    assert not cluster.of("hook-started")
    assert cluster.rows("SELECT DISTINCT state, claims FROM workflow_runs") == [("completed", 1)]


# -- in one process: leases of other hosts, old stores, shared stores ------------------

NO_CONFIG = Config(autoload=False)


def lease_config(lease: float) -> Config:
    return Config(autoload=False, raw={"engine": {"lease_timeout": lease, "poll_interval": 0.05}})


def sql(db: Path, statement: str, *params: Any) -> list[tuple[Any, ...]]:
    with closing(sqlite3.connect(db)) as conn, conn:
        return list(conn.execute(statement, params))


async def wait_until(check: Callable[[], bool]) -> None:
    deadline = asyncio.get_running_loop().time() + 30
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


def test_only_workers_gone_from_other_hosts_lose_their_jobs_and_runs(tmp_path: Path) -> None:
    db = tmp_path / "hosts.sqlite3"
    ids = enqueue(db, {"n": 1}, {"n": 2}, {"n": 3}, {"n": 4})
    now = time.time()
    insert = (
        "INSERT INTO workers (id, pid, hostname, node, token, started_at, heartbeat_at) "
        "VALUES (?, 4242, 'elsewhere', 'another-node', NULL, ?, ?)"
    )
    sql(db, insert, "stale", now - 500, now - 100)  # no heartbeat for 100 s
    sql(db, insert, "fresh", now - 500, now)  # alive on another host
    for job_id, owner in zip(ids, ["stale", "fresh", "ghost", None], strict=True):
        sql(db, "UPDATE jobs SET state = 'running', owner = ? WHERE seq = ?", owner, int(job_id))
    for run_id, owner in [("run-stale", "stale"), ("run-fresh", "fresh")]:
        sql(
            db,
            "INSERT INTO workflow_runs (id, name, state, input, started_at, owner, claims) "
            "VALUES (?, 'flow', 'running', '{\"n\": 0}', ?, ?, 1)",
            run_id,
            now,
            owner,
        )

    engine = Engine(store=SQLiteStore(db), autoload=False, config=lease_config(30))
    ran: list[int] = []
    flows: list[str] = []

    @engine.job("work")
    def work(payload: Any) -> None:
        ran.append(payload["n"])

    @engine.workflow("flow")
    async def flow(wf: Any, payload: Any) -> str:
        flows.append(wf.run_id)
        return "done"

    async def main() -> None:
        async with engine:
            await wait_until(lambda: len(ran) == 3 and len(flows) == 1)
            await asyncio.sleep(0.2)  # a few more heartbeats and polls: nothing else moves

    asyncio.run(main())
    # The stale worker's job, the job of a worker with no row, and the job without an
    # owner (left by an older version) ran; the live worker's job and run were left alone.
    assert sorted(ran) == [1, 3, 4]
    assert flows == ["run-stale"]
    assert sql(db, "SELECT state, owner FROM jobs WHERE seq = ?", int(ids[1])) == [
        ("running", "fresh")
    ]
    runs = sql(db, "SELECT id, state, owner FROM workflow_runs ORDER BY id")
    assert runs[0] == ("run-fresh", "running", "fresh")
    assert runs[1][:2] == ("run-stale", "completed")
    assert runs[1][2] not in ("stale", None)  # finished by the engine that took it
    assert sql(db, "SELECT id FROM workers") == [("fresh",)]


def test_a_store_of_schema_version_1_is_upgraded_and_its_running_work_resumed(
    tmp_path: Path,
) -> None:
    db = tmp_path / "v1.sqlite3"
    with closing(sqlite3.connect(db)) as conn, conn:
        for statement in SCHEMA_V1:
            conn.execute(statement)
        conn.execute("INSERT INTO meta VALUES ('schema_version', '1')")
        conn.execute(
            "INSERT INTO jobs (name, queue, payload, state, priority, max_retries, "
            "retry_count, run_at, created_at, started_at) "
            "VALUES ('work', 'default', '{\"n\": 9}', 'running', 0, 3, 0, 1.0, 1.0, 1.0)"
        )
        conn.execute(
            "INSERT INTO workflow_runs (id, name, state, input, started_at) "
            "VALUES ('old-run', 'flow', 'running', '{\"n\": 1}', 1.0)"
        )
        conn.execute("INSERT INTO workflow_steps VALUES ('old-run', 'one', '\"one-1\"', 0.1, 1.0)")
    engine = Engine(store=SQLiteStore(db), autoload=False, config=lease_config(30))
    ran: list[Any] = []
    steps: list[str] = []

    @engine.job("work")
    def work(payload: Any) -> None:
        ran.append(payload)

    def step(name: str) -> str:
        steps.append(name)
        return name

    @engine.workflow("flow")
    async def flow(wf: Any, payload: Any) -> list[Any]:
        one = await wf.step("one", step, "one")
        two = await wf.step("two", step, "two")
        return [one, two, wf.resumed]

    async def main() -> WorkflowRun | None:
        async with engine:
            await engine.drain(timeout=10)
            return await engine.get_run("old-run")

    run = asyncio.run(main())
    assert ran == [{"n": 9}]
    assert steps == ["two"]  # step one was checkpointed before
    assert run is not None
    assert run.to_dict()["output"] == ["one-1", "two", True]
    assert sql(db, "SELECT value FROM meta WHERE key = 'schema_version'") == [("3",)]


@pytest.mark.parametrize("kind", ["sqlite", "memory"])
def test_engines_sharing_a_store_leave_each_others_jobs_alone(tmp_path: Path, kind: str) -> None:
    from dispatch_ext.engine import MemoryStore

    shared: Any = SQLiteStore(tmp_path / "s.sqlite3") if kind == "sqlite" else MemoryStore()
    second_store: Any = SQLiteStore(tmp_path / "s.sqlite3") if kind == "sqlite" else shared
    first = Engine(store=shared, autoload=False, config=lease_config(30))
    second = Engine(store=second_store, autoload=False, config=lease_config(30))
    runs: list[str] = []

    async def main() -> None:
        release = asyncio.Event()
        for engine, name in ((first, "first"), (second, "second")):

            @engine.job("hold")
            async def hold(payload: Any, name: str = name) -> None:
                runs.append(name)
                await release.wait()

        async with first:
            await first.enqueue("hold")
            await wait_until(lambda: runs == ["first"])
            async with second:  # starts and stops next to the running job
                await asyncio.sleep(0.2)
                assert runs == ["first"]
                assert (await second.counts())["running"] == 1
            release.set()
            await first.drain(timeout=10)
            assert (await first.counts())["completed"] == 1

    asyncio.run(main())
    assert runs == ["first"]


def test_drain_waits_for_runs_another_engine_started(tmp_path: Path) -> None:
    db = tmp_path / "drain.sqlite3"
    engine = Engine(store=SQLiteStore(db), autoload=False, config=lease_config(30))
    hooks = StartedHooks()
    finished: list[str] = []

    @engine.workflow("flow")
    async def flow(wf: Any, payload: Any) -> None:
        await wf.step("one", asyncio.sleep, 0.2)
        finished.append(wf.run_id)

    async def main() -> str:
        async with engine:
            other = producer(db, hooks)
            run = await other.start_workflow("flow", {"n": 1})
            await other.stop()
            await engine.drain(timeout=10)
            assert finished == [run.id]
            return run.id

    run_id = asyncio.run(main())
    assert hooks.started == [run_id]


SCHEMA_V1 = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    """CREATE TABLE jobs (
        seq INTEGER PRIMARY KEY, name TEXT NOT NULL, queue TEXT NOT NULL,
        payload TEXT NOT NULL, state TEXT NOT NULL, priority INTEGER NOT NULL,
        max_retries INTEGER NOT NULL, retry_count INTEGER NOT NULL, last_error TEXT,
        run_at REAL NOT NULL, created_at REAL NOT NULL, started_at REAL,
        completed_at REAL, timeout REAL)""",
    """CREATE INDEX jobs_waiting ON jobs (priority DESC, run_at, seq)
        WHERE state IN ('pending', 'retrying')""",
    "CREATE INDEX jobs_running ON jobs (seq) WHERE state = 'running'",
    """CREATE TABLE dead_letters (
        id INTEGER PRIMARY KEY AUTOINCREMENT, job_id TEXT NOT NULL, job TEXT NOT NULL,
        error TEXT NOT NULL, error_type TEXT NOT NULL, traceback TEXT,
        failed_at REAL NOT NULL, replayed_as TEXT, replayed_at REAL)""",
    """CREATE TABLE workflow_runs (
        id TEXT PRIMARY KEY, name TEXT NOT NULL, state TEXT NOT NULL, input TEXT NOT NULL,
        output TEXT, error TEXT, started_at REAL NOT NULL, completed_at REAL)""",
    "CREATE INDEX workflow_runs_running ON workflow_runs (started_at) WHERE state = 'running'",
    """CREATE TABLE workflow_steps (
        run_id TEXT NOT NULL, step TEXT NOT NULL, result TEXT NOT NULL,
        elapsed REAL NOT NULL, completed_at REAL NOT NULL,
        PRIMARY KEY (run_id, step)) WITHOUT ROWID""",
)


def test_workers_sharing_a_store_fire_each_cron_time_once(tmp_path: Path) -> None:
    db = tmp_path / "cron.sqlite3"
    fired: list[tuple[str, float]] = []

    class Fires:
        def __init__(self, name: str) -> None:
            self.name = f"fires-{name}"
            self.engine = name

        def on_cron_fired(self, entry: Any, job: Any) -> None:
            fired.append((self.engine, entry.next_run_at.timestamp()))

    engines = []
    for name in ("a", "b"):
        engine = Engine(
            store=SQLiteStore(db), extensions=[Fires(name)], autoload=False, config=lease_config(30)
        )

        @engine.job("tick")
        def tick(payload: Any) -> None:
            pass

        engine.cron("every-second", "* * * * * *", "tick")
        engines.append(engine)

    async def main() -> None:
        async with engines[0], engines[1]:
            await wait_until(lambda: len({at for _, at in fired}) >= 3)

    asyncio.run(main())
    times = [at for _, at in fired]
    assert len(times) == len(set(times))  # no fire time enqueued twice
    count = sql(db, "SELECT COUNT(*) FROM jobs WHERE name = 'tick'")[0][0]
    assert count in (len(times), len(times) + 1)  # + a fire cut short by the shutdown
