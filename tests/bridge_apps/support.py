"""Helpers for the bridge tests: brokers, the recorder distribution, worker processes, events.

Every worker runs as a real subprocess on a real broker. Extensions reach it the way they
reach users: through an installed distribution (a ``*.dist-info`` folder on
``PYTHONPATH``) and a ``dispatch.toml`` named by ``DISPATCH_CONFIG``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dispatch_ext.testing.distributions import make_distribution

TESTS_DIR = Path(__file__).resolve().parent.parent
RECORDER_SOURCE = Path(__file__).with_name("recorder.py")

REDIS_URL = "redis://127.0.0.1:6379/0"
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
BROKER_PORTS = {"redis": ("Redis", 6379), "rabbitmq": ("RabbitMQ", 5672)}

WAIT = 30.0
"""Seconds a test waits for an event before it fails with what was heard instead."""


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require_broker(kind: str) -> None:
    """Skip when the broker is not reachable (outside CI); in CI, fail instead."""
    label, port = BROKER_PORTS[kind]
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError as exc:
        reason = f"{label} not reachable on 127.0.0.1:{port}"
        if in_ci():
            pytest.fail(f"{reason} ({exc}); CI must run the brokers (see .ci/run)")
        pytest.skip(reason)


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


# -- the recorder distribution ----------------------------------------------------------


def make_recorder_distribution(root: Path) -> Path:
    """Install the test extensions into ``root`` as distribution ``dispatch-bridge-recorder``."""
    make_distribution(
        root,
        "dispatch-bridge-recorder",
        entry_points={
            "recorder": "bridge_recorder:FileRecorder",
            "faulty": "bridge_recorder:Faulty",
        },
        modules={"bridge_recorder.py": RECORDER_SOURCE.read_text(encoding="utf-8")},
    )
    return root


def write_config(path: Path, events: Path, enable: Sequence[str] = ("recorder",)) -> Path:
    """A ``dispatch.toml`` enabling ``enable`` and pointing the recorder at ``events``."""
    names = ", ".join(json.dumps(n) for n in enable)
    text = f"[dispatch]\nenable = [{names}]\n\n[extensions.recorder]\n"
    path.write_text(text + f"path = {json.dumps(str(events))}\n", encoding="utf-8")
    return path


def worker_env(site: Path, config: Path, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a worker: the distribution and the test apps importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_EXT_")}
    paths = [str(site), str(TESTS_DIR), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env["DISPATCH_CONFIG"] = str(config)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYTEST_CURRENT_TEST", None)
    env.update(extra or {})
    return env


# -- processes ---------------------------------------------------------------------------


@dataclass
class Process:
    """A worker (or beat) subprocess writing its output to a log file."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                self.argv,
                env=self.env,
                cwd=str(TESTS_DIR),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def output(self) -> str:
        try:
            return self.log.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_output(self, text: str, count: int = 1, timeout: float = WAIT) -> None:
        """Wait until ``text`` was printed ``count`` times (e.g. once per worker process)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.output().count(text) >= count:
                return
            if self.proc is not None and self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(
            f"{self.name} did not print {text!r} within {timeout:g} s "
            f"(exit status {self.proc.poll() if self.proc else None}); its output:\n"
            f"{self.tail()}"
        )

    def tail(self, lines: int = 60) -> str:
        return "\n".join(self.output().splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM (a graceful shutdown); SIGKILL the whole group if it lingers."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return None if proc is None else proc.returncode
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
            raise AssertionError(
                f"{self.name} did not stop within {timeout:g} s of SIGTERM; killed. "
                f"Its output:\n{self.tail()}"
            ) from None

    def kill(self) -> None:
        """Make sure nothing of it is left (finalizers)."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(AssertionError):
                self.stop(timeout=15)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # children left behind by a crash


# -- events --------------------------------------------------------------------------------


@dataclass
class Events:
    """The JSON lines the recorder extensions of every process wrote to one file."""

    path: Path
    processes: list[Process] = field(default_factory=list)

    def read(self) -> list[dict[str, Any]]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def of(self, ident: str) -> list[dict[str, Any]]:
        """Events about job ``ident`` or workflow run ``ident``, in file order."""
        return [e for e in self.read() if _ident(e) == ident]

    def wait(
        self,
        predicate: Callable[[list[dict[str, Any]]], bool],
        what: str,
        timeout: float = WAIT,
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            events = self.read()
            if predicate(events):
                return events
            if time.monotonic() > deadline:
                heard = "\n".join(describe(e) for e in events[-40:]) or "nothing"
                logs = "\n\n".join(f"--- {p.name} ---\n{p.tail(30)}" for p in self.processes)
                raise AssertionError(
                    f"waited {timeout:g} s for {what}; the recorders heard:\n{heard}\n{logs}"
                )
            time.sleep(0.05)

    def wait_for(self, hook: str, ident: str, count: int = 1, timeout: float = WAIT) -> None:
        self.wait(
            lambda events: (
                sum(1 for e in events if e["hook"] == hook and _ident(e) == ident) >= count
            ),
            f"{count} x {hook} for {ident}",
            timeout,
        )


def _ident(event: Mapping[str, Any]) -> str | None:
    if "run" in event:
        return str(event["run"]["id"])
    if "job" in event:
        return str(event["job"]["id"])
    return None


def describe(event: Mapping[str, Any]) -> str:
    extra = ""
    if "attempt" in event:
        extra = f" attempt={event['attempt']}"
    if "step" in event:
        extra = f" step={event['step']}"
    return f"pid={event['pid']} {event['hook']} {_ident(event)}{extra}"


def hooks(events: Iterable[Mapping[str, Any]], pid: int | None = None) -> list[str]:
    """The hook names, in order, optionally of one process only."""
    return [e["hook"] for e in events if pid is None or e["pid"] == pid]


def by_process(events: Iterable[Mapping[str, Any]]) -> dict[int, list[str]]:
    """Hook names per process id, each list in the order that process emitted them."""
    result: dict[int, list[str]] = {}
    for event in events:
        result.setdefault(event["pid"], []).append(event["hook"])
    return result


def across(events: Iterable[Mapping[str, Any]], *pids: int) -> list[str]:
    """The hooks of ``pids``, each process's in its own order, processes in the order given.

    Across processes there is no order (a worker may start a job before the producer's
    ``on_job_enqueued`` is written), so a producer-then-worker sequence is built this way.
    """
    events = list(events)
    return [e["hook"] for pid in pids for e in events if e["pid"] == pid]


def the(events: Iterable[Mapping[str, Any]], hook: str) -> Mapping[str, Any]:
    """The one event of ``hook`` among ``events``."""
    found = [e for e in events if e["hook"] == hook]
    assert len(found) == 1, f"expected one {hook}, heard {len(found)}"
    return found[0]
