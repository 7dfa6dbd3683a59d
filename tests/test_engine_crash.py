"""Durability: a SQLite store survives ``kill -9`` of the engine's process.

Each test runs the engine in a real subprocess, kills it with SIGKILL mid-work, then
starts a second process on the same file and checks what it finishes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="needs SIGKILL")

APP = textwrap.dedent(
    """
    import asyncio, json, os, sys, time

    from dispatch_ext.config import Config
    from dispatch_ext.engine import Engine, SQLiteStore

    db, log, events, mode = sys.argv[1:5]
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    PID = os.getpid()


    def write(line):
        os.write(fd, f"{line} {PID}\\n".encode())


    class HookLog:
        # Appends every workflow hook it hears to a file, one JSON object a line.
        def __init__(self):
            self.fd = os.open(events, os.O_WRONLY | os.O_APPEND | os.O_CREAT)

        def _add(self, **fields):
            os.write(self.fd, (json.dumps({**fields, "pid": PID}) + "\\n").encode())

        def on_workflow_started(self, run):
            self._add(hook="started", run=run.id)

        def on_workflow_step_completed(self, run, step):
            self._add(hook="step_completed", run=run.id, step=step)

        def on_workflow_step_failed(self, run, step):
            self._add(hook="step_failed", run=run.id, step=step)

        def on_workflow_completed(self, run):
            self._add(hook="completed", run=run.id, output=run.to_dict()["output"])

        def on_workflow_failed(self, run):
            self._add(hook="failed", run=run.id)


    engine = Engine(
        store=SQLiteStore(db), extensions=[HookLog()], autoload=False, concurrency=4,
        config=Config(autoload=False),
    )


    @engine.job("work", max_retries=0)
    def work(n):
        write(f"start {n}")
        if mode == "jobs-crash" and n == 150:
            time.sleep(60)  # killed while this runs
        time.sleep(0.002)
        write(f"end {n}")


    def step(n):
        write(f"step {n}")
        return n * 10


    @engine.workflow("pipeline")
    async def pipeline(wf, payload):
        one = await wf.step("one", step, 1)
        two = await wf.step("two", step, 2)
        if mode == "workflow-crash":
            write("between")
            await asyncio.sleep(60)  # killed here, between steps two and three
        three = await wf.step("three", step, 3)
        return [one, two, three, payload]


    async def main():
        if mode == "jobs-crash":
            await asyncio.gather(*(engine.enqueue("work", n) for n in range(500)))
            write("enqueued")
            async with engine:
                await asyncio.sleep(60)
        elif mode == "workflow-crash":
            async with engine:
                await engine.start_workflow("pipeline", {"order": 7})
                await asyncio.sleep(60)
        else:
            async with engine:
                await engine.drain(timeout=60)
                print(json.dumps(await engine.counts()))


    asyncio.run(main())
    """
)


def _start(tmp_path: Path, mode: str) -> subprocess.Popen[str]:
    script = tmp_path / "app.py"
    script.write_text(APP)
    args = [
        str(tmp_path / "jobs.sqlite3"),
        str(tmp_path / "log.txt"),
        str(tmp_path / "events.jsonl"),
    ]
    env = {**os.environ, "DISPATCH_EXT_AUTOLOAD": "0"}
    return subprocess.Popen(
        [sys.executable, str(script), *args, mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _lines(tmp_path: Path) -> list[list[str]]:
    path = tmp_path / "log.txt"
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def _wait_until(check: Callable[[], bool], proc: subprocess.Popen[str], what: str) -> None:
    deadline = time.monotonic() + 60
    while not check():
        if proc.poll() is not None:
            raise AssertionError(f"the engine process exited early: {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def _kill(proc: subprocess.Popen[str]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL


def _finish(tmp_path: Path, killed: subprocess.Popen[str]) -> dict[str, int]:
    proc = _start(tmp_path, "finish")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    # Recovered at once because the killed worker's process is gone, not after its lease.
    assert f"(pid {killed.pid} on " in err
    assert "its process has exited" in err
    counts: dict[str, int] = json.loads(out.strip().splitlines()[-1])
    return counts


def test_killed_worker_loses_no_job_and_reruns_the_interrupted_one(tmp_path: Path) -> None:
    first = _start(tmp_path, "jobs-crash")

    def busy_and_stuck() -> bool:
        lines = _lines(tmp_path)
        ended = sum(1 for line in lines if line[0] == "end")
        return ended >= 100 and ["start", "150", str(first.pid)] in lines

    _wait_until(busy_and_stuck, first, "100 jobs done and job 150 running")
    _kill(first)

    before = _lines(tmp_path)
    started_first = {int(line[1]) for line in before if line[0] == "start"}
    ended_first = {int(line[1]) for line in before if line[0] == "end"}
    interrupted = started_first - ended_first
    assert 150 in interrupted
    assert len(ended_first) < 500

    counts = _finish(tmp_path, first)
    assert counts["completed"] == 500
    assert counts["pending"] == counts["running"] == counts["retrying"] == counts["dead"] == 0

    after = _lines(tmp_path)[len(before) :]
    assert {line[2] for line in after} != {str(first.pid)}
    ended_second = {int(line[1]) for line in after if line[0] == "end"}
    assert ended_first | ended_second == set(range(500))  # none lost
    assert interrupted <= ended_second  # every interrupted job ran again, to its end
    # Only jobs interrupted (or whose completion was not yet committed) ran twice.
    assert len(ended_first & ended_second) <= 80


def test_workflow_killed_between_steps_resumes_at_the_next_step(tmp_path: Path) -> None:
    first = _start(tmp_path, "workflow-crash")
    _wait_until(lambda: any(line[0] == "between" for line in _lines(tmp_path)), first, "step two")
    _kill(first)

    counts = _finish(tmp_path, first)
    assert counts["pending"] == counts["running"] == 0

    steps = [(line[1], line[2]) for line in _lines(tmp_path) if line[0] == "step"]
    first_pid = str(first.pid)
    assert [s for s, pid in steps if pid == first_pid] == ["1", "2"]
    assert [s for s, pid in steps if pid != first_pid] == ["3"]  # 1 and 2 did not run again

    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [(e["hook"], e.get("step")) for e in events if e["pid"] == first.pid] == [
        ("started", None),
        ("step_completed", "one"),
        ("step_completed", "two"),
    ]
    resumed = [e for e in events if e["pid"] != first.pid]
    assert [(e["hook"], e.get("step")) for e in resumed] == [
        ("step_completed", "three"),
        ("completed", None),
    ]
    assert len({e["run"] for e in events}) == 1
    assert resumed[-1]["output"] == [10, 20, 30, {"order": 7}]
