"""The Dramatiq bridge against real workers on Redis and on RabbitMQ.

Workers run as subprocesses (``dramatiq bridge_apps.dramatiq_worker``) and discover the
recorder extension from a real distribution; the test process is the producer, with the
same recorder registered explicitly. Every process appends what it heard to one file,
with its pid, so each test asserts the sequence each process emitted.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# The worker apps live in tests/bridge_apps; workers import them from PYTHONPATH, this
# process from here.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bridge_apps.dramatiq_app import make_broker
from bridge_apps.embedded import embedded_sequences
from bridge_apps.recorder import FileRecorder
from bridge_apps.support import (
    AMQP_URL,
    REDIS_URL,
    Events,
    Process,
    across,
    by_process,
    make_recorder_distribution,
    require_broker,
    the,
    unique,
    worker_env,
    write_config,
)

pytestmark = pytest.mark.brokers

URLS = {"redis": REDIS_URL, "rabbitmq": AMQP_URL}
ME = os.getpid()
READY = "Worker process is ready for action."


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site-packages folder holding the recorder distribution."""
    return make_recorder_distribution(tmp_path_factory.mktemp("site"))


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """What the same recorder hears for the same scenarios on the embedded engine.

    Dramatiq has no workflows and no scheduler: those scenarios have no counterpart here.
    """
    return embedded_sequences(tmp_path_factory.mktemp("embedded") / "events.jsonl")


@dataclass
class Stack:
    """One broker, one queue, a producer broker in this process and its event file."""

    kind: str
    queue: str
    tmp: Path
    site: Path
    events: Events
    broker: Any

    def send(self, actor: str, *args: Any, **options: Any) -> Any:
        return self.broker.get_actor(actor).send_with_options(args=args, **options)

    def worker(
        self,
        *,
        processes: int = 1,
        enable: Sequence[str] = ("recorder",),
        env: dict[str, str] | None = None,
    ) -> Process:
        config = write_config(self.tmp / f"{unique('c')}.toml", self.events.path, enable)
        extra = {
            "BRIDGE_BROKER_KIND": self.kind,
            "BRIDGE_BROKER_URL": URLS[self.kind],
            "BRIDGE_QUEUE": self.queue,
            "dramatiq_worker_timeout": "100",  # poll the delay queue often: fast retries
            **(env or {}),
        }
        argv = [
            sys.executable,
            "-m",
            "dramatiq",
            "bridge_apps.dramatiq_worker",
            f"--processes={processes}",
            "--threads=1",
            "--worker-shutdown-timeout=10000",
        ]
        process = Process(
            f"dramatiq worker ({self.kind})",
            argv,
            worker_env(self.site, config, extra),
            self.tmp / f"{unique('worker')}.log",
        )
        self.events.processes.append(process)
        process.start()
        process.wait_for_output(READY, count=processes)
        return process

    def pending(self, queue: str) -> int:
        """Messages stored in ``queue`` (``<q>.XQ`` for the dead letters) and not acked."""
        if self.kind == "redis":
            import redis

            client = redis.Redis.from_url(REDIS_URL)
            try:
                return int(client.hlen(f"{self.queue}-ns:{queue}.msgs"))
            finally:
                client.close()
        import pika

        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        try:
            declared = connection.channel().queue_declare(queue, passive=True)
            return int(declared.method.message_count)
        finally:
            connection.close()


def _cleanup(stack: Stack) -> None:
    if stack.kind == "redis":
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(match=f"{stack.queue}-ns*"):
            client.delete(key)
        client.close()
        return
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        for suffix in ("", ".DQ", ".XQ"):
            channel.queue_delete(stack.queue + suffix)
    finally:
        connection.close()


def _stack(kind: str, site: Path, tmp: Path) -> Iterator[Stack]:
    require_broker(kind)
    queue = unique(f"bridge-dramatiq-{kind}")
    events = Events(tmp / "events.jsonl")
    broker = make_broker(
        kind, URLS[kind], queue, extensions=[FileRecorder(str(events.path))], autoload=False
    )
    stack = Stack(kind, queue, tmp, site, events, broker)
    try:
        yield stack
    finally:
        broker.close()
        _cleanup(stack)


@pytest.fixture(scope="module", params=["redis", "rabbitmq"])
def stack(
    request: pytest.FixtureRequest, site: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    yield from _stack(request.param, site, tmp_path_factory.mktemp(f"dramatiq-{request.param}"))


@pytest.fixture
def private_stack(stack: Stack, site: Path, tmp_path: Path) -> Iterator[Stack]:
    """A queue of one test, away from the module's shared worker."""
    yield from _stack(stack.kind, site, tmp_path)


@pytest.fixture(scope="module")
def worker(stack: Stack) -> Iterator[Process]:
    """A worker (one process, one thread) shared by the sequence tests of one broker."""
    process = stack.worker()
    try:
        yield process
    finally:
        process.kill()


def _worker_pid(events: list[dict[str, Any]]) -> int:
    pids = {e["pid"] for e in events} - {ME}
    assert len(pids) == 1, f"expected one worker process, heard {sorted(pids)}"
    return pids.pop()


def _settle(stack: Stack) -> None:
    """Run one more message: a one-thread worker has then emitted all before it."""
    message = stack.send("bridge_ok", 0)
    stack.events.wait_for("on_job_completed", message.message_id)


# -- jobs ------------------------------------------------------------------------------


def test_success_is_enqueued_started_completed(
    stack: Stack, worker: Process, embedded: dict[str, list[str]]
) -> None:
    message = stack.send("bridge_ok", 1)
    stack.events.wait_for("on_job_completed", message.message_id)
    events = stack.events.of(message.message_id)
    pid = _worker_pid(events)

    assert by_process(events) == {
        ME: ["on_job_enqueued"],
        pid: ["on_job_started", "on_job_completed"],
    }
    assert across(events, ME, pid) == embedded["success"]
    states = ("pending", "running", "completed")
    for event, state in zip(events_in(events, ME, pid), states, strict=True):
        job = event["job"]
        assert (job["name"], job["queue"], job["state"]) == ("bridge_ok", stack.queue, state)
        assert job["payload"] == {"args": [1], "kwargs": {}}
        assert job["created_at"].endswith("+00:00")
    completed = events_in(events, ME, pid)[-1]
    assert completed["elapsed"] >= 0
    assert completed["job"]["max_retries"] == 20  # the Retries middleware's default


def events_in(events: list[dict[str, Any]], *pids: int) -> list[dict[str, Any]]:
    """The events of ``pids``, the processes taken in that order."""
    return [e for pid in pids for e in events if e["pid"] == pid]


def test_fails_twice_then_succeeds(
    stack: Stack, worker: Process, embedded: dict[str, list[str]]
) -> None:
    message = stack.send("bridge_flaky", 2)
    stack.events.wait_for("on_job_completed", message.message_id)
    _settle(stack)
    events = stack.events.of(message.message_id)
    pid = _worker_pid(events)

    # Each retry goes through <queue>.DQ and back to <queue>: neither put is an enqueue.
    assert by_process(events) == {
        ME: ["on_job_enqueued"],
        pid: [
            "on_job_started",
            "on_job_retrying",
            "on_job_started",
            "on_job_retrying",
            "on_job_started",
            "on_job_completed",
        ],
    }
    # Like the embedded engine: on_job_started for every attempt.
    assert across(events, ME, pid) == embedded["fails twice then succeeds"]
    retrying = [e for e in events if e["hook"] == "on_job_retrying"]
    assert [e["attempt"] for e in retrying] == [1, 2]
    assert [e["error"]["message"] for e in retrying] == ["attempt 1 fails", "attempt 2 fails"]
    assert all(e["next_run_at_utc"] for e in retrying)
    assert [e["job"]["retry_count"] for e in retrying] == [1, 2]
    started = [e["job"]["retry_count"] for e in events if e["hook"] == "on_job_started"]
    assert started == [0, 1, 2]


def test_retries_exhausted_fails_then_dead_letters(
    stack: Stack, worker: Process, embedded: dict[str, list[str]]
) -> None:
    message = stack.send("bridge_doomed")
    stack.events.wait_for("on_job_dlq", message.message_id)
    _settle(stack)
    events = stack.events.of(message.message_id)
    pid = _worker_pid(events)

    assert by_process(events) == {
        ME: ["on_job_enqueued"],
        pid: [
            "on_job_started",
            "on_job_retrying",
            "on_job_started",
            "on_job_failed",
            "on_job_dlq",
        ],
    }
    assert across(events, ME, pid) == embedded["retries exhausted"]
    failed, dead = the(events, "on_job_failed"), the(events, "on_job_dlq")
    assert failed["error"] == dead["error"] == {"type": "ValueError", "message": "always fails"}
    assert (failed["job"]["state"], dead["job"]["state"]) == ("failed", "dead")
    assert stack.pending(f"{stack.queue}.XQ") >= 1


def test_delayed_message_is_enqueued_once(stack: Stack, worker: Process) -> None:
    """The producer puts it on <queue>.DQ, the worker moves it to <queue> when due."""
    message = stack.send("bridge_ok", 2, delay=200)
    stack.events.wait_for("on_job_completed", message.message_id)
    _settle(stack)
    events = stack.events.of(message.message_id)
    pid = _worker_pid(events)

    assert by_process(events) == {
        ME: ["on_job_enqueued"],
        pid: ["on_job_started", "on_job_completed"],
    }
    enqueued = the(events, "on_job_enqueued")["job"]
    assert enqueued["queue"] == stack.queue
    assert enqueued["run_at"] > enqueued["created_at"]


def test_message_past_its_age_limit_never_starts(stack: Stack, worker: Process) -> None:
    """AgeLimit rejects it before it runs: failed and dead-lettered, never started."""
    message = stack.send("bridge_aged")
    stack.events.wait_for("on_job_dlq", message.message_id)
    _settle(stack)
    events = stack.events.of(message.message_id)
    pid = _worker_pid(events)

    assert by_process(events) == {ME: ["on_job_enqueued"], pid: ["on_job_failed", "on_job_dlq"]}
    assert the(events, "on_job_dlq")["error"]["type"] == "SkipMessage"


# -- process life ----------------------------------------------------------------------


def test_shutdown_once_per_worker_process(private_stack: Stack) -> None:
    process = private_stack.worker(processes=2)
    try:
        assert process.stop() == 0, process.tail()
    finally:
        process.kill()
    shutdowns = [e["pid"] for e in private_stack.events.read() if e["hook"] == "on_shutdown"]

    # Each worker process discovered its extensions when it booted and says goodbye once;
    # the parent process that forks them never loads any.
    assert len(shutdowns) == 2
    assert Counter(shutdowns) == dict.fromkeys(shutdowns, 1)
    assert process.pid not in shutdowns


def test_faulty_extension_changes_no_outcome(private_stack: Stack) -> None:
    """An extension raising everywhere (strict registry, slow async hook) breaks nothing."""
    stack = private_stack
    process = stack.worker(enable=("faulty", "recorder"), env={"DISPATCH_EXT_STRICT": "1"})
    try:
        ok = stack.send("bridge_ok", 1)
        flaky = stack.send("bridge_flaky", 1)
        doomed = stack.send("bridge_doomed")
        stack.events.wait_for("on_job_completed", ok.message_id)
        stack.events.wait_for("on_job_completed", flaky.message_id)
        stack.events.wait_for("on_job_dlq", doomed.message_id)
        assert process.stop() == 0, process.tail()
    finally:
        process.kill()

    def worker_hooks(message: Any) -> list[str]:
        return [e["hook"] for e in stack.events.of(message.message_id) if e["pid"] != ME]

    assert worker_hooks(ok) == ["on_job_started", "on_job_completed"]
    assert worker_hooks(flaky) == [
        "on_job_started",
        "on_job_retrying",
        "on_job_started",
        "on_job_completed",
    ]
    assert worker_hooks(doomed)[-2:] == ["on_job_failed", "on_job_dlq"]
    log = process.output()
    assert "faulty extension raised in on_job_completed" in log
    assert "timed out in on_job_started" in log
    assert stack.pending(stack.queue) == 0  # every message was acknowledged
    assert stack.pending(f"{stack.queue}.XQ") == 1  # the doomed one, dead-lettered
