"""``dispatch-ext run`` and ``dispatch-ext dlq`` against real engines and store files."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from dispatch_ext.cli import main
from dispatch_ext.config import Config
from dispatch_ext.engine import Engine, SQLiteStore

APP = textwrap.dedent(
    """
    import os
    from dispatch_ext.config import Config
    from dispatch_ext.engine import Engine, SQLiteStore

    class HookFile:
        name = "hookfile"

        def _add(self, line):
            with open("hooks.txt", "a") as f:
                f.write(line + "\\n")

        def on_cron_fired(self, entry):
            self._add("on_cron_fired " + entry.name)

        def on_job_completed(self, job):
            self._add("on_job_completed " + job.name)

        def on_shutdown(self):
            self._add("on_shutdown")


    def build():
        engine = Engine(
            store=SQLiteStore("app.sqlite3"), extensions=[HookFile()], autoload=False,
            config=Config(autoload=False),
        )

        @engine.job("tick")
        def tick(payload):
            pass

        engine.cron("every-second", "* * * * * *", "tick")
        return engine


    engine = build()
    not_an_engine = 42


    def broken_factory():
        return {}["missing"]
    """
)


def _hooks(tmp_path: Path) -> list[str]:
    path = tmp_path / "hooks.txt"
    return path.read_text().splitlines() if path.exists() else []


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGTERM")
@pytest.mark.parametrize(
    ("target", "sig"),
    [("app:engine", signal.SIGTERM), ("app:build", signal.SIGINT), ("app", signal.SIGTERM)],
)
def test_run_serves_until_a_signal_then_shuts_down_gracefully(
    tmp_path: Path, target: str, sig: signal.Signals
) -> None:
    (tmp_path / "app.py").write_text(APP)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from dispatch_ext.cli import main; main()", "run", target],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "DISPATCH_EXT_AUTOLOAD": "0"},
    )
    deadline = time.monotonic() + 30
    while "on_job_completed tick" not in _hooks(tmp_path):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no cron job ran: {proc.communicate()}")
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    hooks = _hooks(tmp_path)
    assert hooks[-1] == "on_shutdown"
    assert hooks.count("on_shutdown") == 1
    assert "shutting down gracefully" in err


def test_run_refuses_what_is_not_an_engine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "app.py").write_text(APP)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    runner = CliRunner()
    result = runner.invoke(main, ["run", "no_such_module_here:engine"])
    assert result.exit_code == 1
    assert "cannot import 'no_such_module_here': no such module" in result.output
    result = runner.invoke(main, ["run", "app:missing"])
    assert result.exit_code == 1
    assert "module 'app' has no attribute 'missing'" in result.output
    result = runner.invoke(main, ["run", "app:not_an_engine"])
    assert result.exit_code == 1
    assert "Error: app:not_an_engine is an int, not an Engine" in result.output
    result = runner.invoke(main, ["run", "app:broken_factory"])
    assert result.exit_code == 1
    assert "Error: calling app:broken_factory() failed: KeyError: 'missing'" in result.output
    # A callable is called: say what it returned, not what it is.
    result = runner.invoke(main, ["run", "os:getcwd"])
    assert result.exit_code == 1
    assert "Error: os:getcwd() returned a str, not an Engine" in result.output
    for malformed in ("a.b:c:d", ":engine", "app:not-a-name", "app..x:engine"):
        result = runner.invoke(main, ["run", malformed])
        assert result.exit_code == 2, (malformed, result.output)
        assert f"{malformed!r} is not MODULE:ATTR" in result.output
    sys.modules.pop("app", None)


def _store_with_dead_jobs(path: Path, count: int) -> None:
    engine = Engine(store=SQLiteStore(path), autoload=False, config=Config(autoload=False))

    @engine.job("import_file", max_retries=0)
    def import_file(payload: Any) -> None:
        raise FileNotFoundError(f"no file {payload['file']}")

    async def main_() -> None:
        async with engine:
            for n in range(count):
                await engine.enqueue("import_file", {"file": f"f{n}.csv"})
            await engine.drain(timeout=10)

    asyncio.run(main_())


def test_dlq_list_and_replay(tmp_path: Path) -> None:
    db = tmp_path / "jobs.sqlite3"
    _store_with_dead_jobs(db, 2)
    runner = CliRunner()

    result = runner.invoke(main, ["dlq", "list", "--db", str(db)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:2] == ["ID", "JOB"]
    assert len(lines) == 3
    assert "FileNotFoundError: no file f1.csv" in lines[1]  # newest first

    result = runner.invoke(main, ["dlq", "list", "--db", str(db), "--json"])
    entries = json.loads(result.output)
    assert [entry["id"] for entry in entries] == [2, 1]
    assert entries[1]["job"]["payload"] == {"file": "f0.csv"}
    assert entries[1]["error_type"] == "FileNotFoundError"
    assert set(entries[0]) == {
        "id",
        "job",
        "error",
        "error_type",
        "traceback",
        "failed_at",
        "replayed_as",
    }

    result = runner.invoke(main, ["dlq", "replay", "1", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "replayed dead-letter entry 1 (job 'import_file') as job" in result.output
    new_id = result.output.split()[-1]

    result = runner.invoke(main, ["dlq", "list", "--db", str(db), "--json"])
    assert [entry["id"] for entry in json.loads(result.output)] == [2]
    result = runner.invoke(main, ["dlq", "list", "--db", str(db), "--json", "--all"])
    assert json.loads(result.output)[1]["replayed_as"] == new_id

    result = runner.invoke(main, ["dlq", "replay", "1", "--db", str(db)])
    assert result.exit_code == 1
    assert f"already replayed as job {new_id}" in result.output
    result = runner.invoke(main, ["dlq", "replay", "77", "--db", str(db)])
    assert result.exit_code == 1
    assert "no dead-letter entry with id 77" in result.output

    # The replayed job is a pending job that an engine on the file runs.
    engine = Engine(store=SQLiteStore(db), autoload=False, config=Config(autoload=False))
    ran: list[Any] = []

    @engine.job("import_file")
    def import_file(payload: Any) -> None:
        ran.append(payload)

    async def run_it() -> None:
        async with engine:
            await engine.drain(timeout=10)

    asyncio.run(run_it())
    assert ran == [{"file": "f0.csv"}]


def test_dlq_reports_a_missing_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DISPATCH_CONFIG", raising=False)
    runner = CliRunner()
    result = runner.invoke(main, ["dlq", "list", "--db", str(tmp_path / "nope.sqlite3")])
    assert result.exit_code == 1
    assert "no store at" in result.output
    assert "nope.sqlite3" in result.output
    result = runner.invoke(main, ["dlq", "list"])  # the default: ./dispatch.sqlite3
    assert result.exit_code == 1
    assert "dispatch.sqlite3" in result.output
    assert not (tmp_path / "dispatch.sqlite3").exists()


def test_dlq_default_store_comes_from_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    _store_with_dead_jobs(tmp_path / "configured.db", 1)
    (tmp_path / "dispatch.toml").write_text('[engine]\ndatabase = "configured.db"\n')
    result = CliRunner().invoke(main, ["dlq", "list", "--json"])
    assert result.exit_code == 0, result.output
    assert len(json.loads(result.output)) == 1


def test_dlq_does_not_touch_running_jobs_of_a_live_engine(tmp_path: Path) -> None:
    import sqlite3

    db = tmp_path / "live.sqlite3"
    _store_with_dead_jobs(db, 1)
    with closing(sqlite3.connect(db)) as conn, conn:  # as if an engine ran this job now
        conn.execute("UPDATE jobs SET state = 'running' WHERE name = 'import_file'")
    result = CliRunner().invoke(main, ["dlq", "list", "--db", str(db)])
    assert result.exit_code == 0
    with closing(sqlite3.connect(db)) as conn:
        states = [row[0] for row in conn.execute("SELECT state FROM jobs")]
    assert states == ["running"]


def _foreign_database(path: Path) -> bytes:
    import sqlite3

    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO users VALUES (1, 'ada')")
    return path.read_bytes()


def test_dlq_refuses_a_file_that_is_not_a_store_and_leaves_it_alone(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    before = _foreign_database(other)
    empty = tmp_path / "empty.db"
    empty.touch()
    runner = CliRunner()
    for args in (["dlq", "list"], ["dlq", "list", "--json"], ["dlq", "replay", "1"]):
        for path in (other, empty):
            result = runner.invoke(main, [*args, "--db", str(path)])
            assert result.exit_code == 1, result.output
            assert result.output == (
                f"Error: {path} is not a dispatch-ext store (no 'meta' table); pass --db "
                "with the engine's database\n"
            )
    assert other.read_bytes() == before
    assert empty.read_bytes() == b""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.db", "other.db"]


def test_dlq_reports_a_file_that_is_not_a_database_without_a_traceback(tmp_path: Path) -> None:
    garbage = tmp_path / "notadb.db"
    garbage.write_text("garbage\n")
    result = CliRunner().invoke(main, ["dlq", "list", "--db", str(garbage)])
    assert result.exit_code == 1
    assert result.output == (
        f"Error: cannot use {str(garbage)!r} as a dispatch-ext store: file is not a database\n"
    )
    assert garbage.read_text() == "garbage\n"


def _cli(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", "from dispatch_ext.cli import main; main()", *args],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "DISPATCH_EXT_AUTOLOAD": "0", "DISPATCH_CONFIG": ""},
    )


def test_run_reports_a_store_it_cannot_open_before_saying_it_runs(tmp_path: Path) -> None:
    (tmp_path / "dispatch.toml").write_text('[engine]\ndatabase = "/nonexistent/dir/x.db"\n')
    (tmp_path / "eng.py").write_text(
        "from dispatch_ext.engine import Engine\nengine = Engine(autoload=False)\n"
    )
    proc = _cli(tmp_path, "run", "eng:engine")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert err == (
        "Error: cannot open the SQLite store '/nonexistent/dir/x.db': unable to open "
        "database file; check that the directory exists and is writable\n"
    )
    assert out == ""


def test_run_refuses_a_database_of_another_application(tmp_path: Path) -> None:
    before = _foreign_database(tmp_path / "other.db")
    (tmp_path / "eng.py").write_text(
        "from dispatch_ext.engine import Engine\nengine = Engine('other.db', autoload=False)\n"
    )
    proc = _cli(tmp_path, "run", "eng:engine")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert err.startswith("Error: other.db is not a dispatch-ext store (no 'meta' table; ")
    assert "Traceback" not in err
    assert (tmp_path / "other.db").read_bytes() == before


STUCK_APP = textwrap.dedent(
    """
    import os, time
    from dispatch_ext.config import Config
    from dispatch_ext.engine import Engine

    engine = Engine("stuck.sqlite3", autoload=False, config=Config(autoload=False))


    @engine.job("charge")
    def charge(payload):
        open("started", "w").close()
        time.sleep(payload["seconds"])
        open("charged", "w").close()  # the effect: must not happen after the shutdown
    """
)


@pytest.mark.skipif(sys.platform == "win32", reason="needs SIGTERM")
def test_run_exits_after_the_shutdown_timeout_without_waiting_for_a_stuck_thread(
    tmp_path: Path,
) -> None:
    (tmp_path / "stuck.py").write_text(STUCK_APP)
    seconds = 30.0

    async def enqueue() -> None:
        engine = Engine(
            store=SQLiteStore(tmp_path / "stuck.sqlite3"),
            autoload=False,
            config=Config(autoload=False),
        )

        @engine.job("charge")
        def charge(payload: Any) -> None:
            pass

        await engine.enqueue("charge", {"seconds": seconds})
        await engine.stop()

    asyncio.run(enqueue())
    proc = _cli(tmp_path, "run", "--shutdown-timeout", "0.5", "stuck:engine")
    deadline = time.monotonic() + 30
    while not (tmp_path / "started").exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"the job did not start: {proc.communicate()}")
        time.sleep(0.02)
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    took = time.monotonic() - began
    assert proc.returncode == 0, err
    assert took < seconds / 2  # the process did not wait for the handler's thread
    assert "at-least-once" in err
    assert not (tmp_path / "charged").exists()  # the thread ended with the process
    import sqlite3

    with closing(sqlite3.connect(tmp_path / "stuck.sqlite3")) as conn:
        assert list(conn.execute("SELECT state, owner FROM jobs")) == [("pending", None)]
        assert list(conn.execute("SELECT COUNT(*) FROM workers")) == [(0,)]


def test_demo_refuses_a_database_of_another_application(tmp_path: Path) -> None:
    other = tmp_path / "other.db"
    before = _foreign_database(other)
    proc = _cli(tmp_path, "demo", "--db", str(other), "--dir", str(tmp_path / "work"), "-q")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out + err
    assert f"Error: {other} is not a dispatch-ext store (no 'meta' table; " in err
    assert "Traceback" not in err
    assert other.read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("other.db-")]


def test_run_reports_an_engine_configuration_error_as_such(tmp_path: Path) -> None:
    (tmp_path / "dispatch.toml").write_text("[engine]\nlease_timout = 3\n")
    (tmp_path / "worker.py").write_text(
        "from dispatch_ext.engine import Engine\nengine = Engine(autoload=False)\n"
    )
    proc = _cli(tmp_path, "run", "worker")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, err
    assert err == (
        f"Error: configuration error: {tmp_path / 'dispatch.toml'}: [engine]: unknown key "
        "'lease_timout'; did you mean 'lease_timeout'? The known keys are: database, "
        "concurrency, shutdown_timeout, poll_interval, keep_completed, lease_timeout.\n"
    )
    assert "importing" not in err
    assert out == ""
