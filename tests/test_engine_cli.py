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
    assert "is a int, not a dispatch_ext.engine.Engine" in result.output
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
