"""The Celery bridge against real workers on Redis and on RabbitMQ.

Workers run as subprocesses (``celery -A bridge_apps.celery_worker worker``) and discover
the recorder extension from a real distribution; the test process is the producer, with
the same recorder registered explicitly. Every process appends what it heard to one
file, with its pid, so each test asserts the sequence each process emitted.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from celery import chain

from dispatch_ext.bridges.celery import CeleryBridge, install

# The worker apps live in tests/bridge_apps; workers import them from PYTHONPATH, this
# process from here.
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bridge_apps.celery_app import dead_letter_names, make_app
from bridge_apps.embedded import embedded_sequences
from bridge_apps.recorder import FileRecorder
from bridge_apps.support import (
    AMQP_URL,
    REDIS_URL,
    Events,
    Process,
    across,
    by_process,
    hooks,
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


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A site-packages folder holding the recorder distribution."""
    return make_recorder_distribution(tmp_path_factory.mktemp("site"))


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """What the same recorder hears for the same scenarios on the embedded engine."""
    return embedded_sequences(tmp_path_factory.mktemp("embedded") / "events.jsonl", cron=True)


@dataclass
class Stack:
    """One broker, one queue, a producer app in this process and its event file."""

    kind: str
    queue: str
    tmp: Path
    site: Path
    events: Events
    app: Any
    extra_queues: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return URLS[self.kind]

    def task(self, name: str) -> Any:
        return self.app.tasks[name]

    def private_queue(self) -> str:
        """A queue of one test, away from the module's shared worker."""
        queue = f"{self.queue}-{unique('q')}"
        self.extra_queues.append(queue)
        return queue

    def send(self, name: str, *args: Any, queue: str | None = None) -> Any:
        return self.task(name).apply_async(args, queue=queue or self.queue)

    def worker(
        self,
        *,
        queue: str | None = None,
        pool: str = "solo",
        concurrency: int = 1,
        enable: Sequence[str] = ("recorder",),
        env: dict[str, str] | None = None,
        command: str = "worker",
    ) -> Process:
        config = write_config(self.tmp / f"{command}-{unique('c')}.toml", self.events.path, enable)
        extra = {"BRIDGE_BROKER_URL": self.url, "BRIDGE_QUEUE": self.queue, **(env or {})}
        queue = queue or self.queue
        argv = [sys.executable, "-m", "celery", "-A", "bridge_apps.celery_worker", command]
        if command == "worker":
            argv += [
                f"--pool={pool}",
                f"--concurrency={concurrency}",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                f"--hostname={unique('bridge')}@%h",
                "-Q",
                queue,
            ]
        else:
            argv += ["--schedule", str(self.tmp / unique("beat")), "--max-interval", "1"]
        process = Process(
            f"celery {command} ({self.kind}, {pool})",
            [*argv, "--loglevel=INFO"],
            worker_env(self.site, config, extra),
            self.tmp / f"{unique(command)}.log",
        )
        self.events.processes.append(process)
        return process.start()

    def settle(self) -> None:
        """Run one more task to completion: a solo worker has then emitted all before it."""
        result = self.task("bridge.ok").delay(0)
        self.events.wait_for("on_job_completed", result.id)

    def queue_length(self, name: str) -> int:
        """Messages waiting in queue ``name`` (ready, not handed to a consumer)."""
        if self.kind == "redis":
            import redis

            client = redis.Redis.from_url(self.url)
            try:
                return sum(
                    int(client.llen(key))
                    for key in client.scan_iter(match=f"{name}*")
                    if client.type(key) == b"list"
                )
            finally:
                client.close()
        with self.app.connection_for_write() as conn:
            return int(conn.default_channel.queue_declare(name, passive=True).message_count)


def _declare_dead_letter_queue(stack: Stack) -> None:
    from kombu import Exchange, Queue

    exchange, queue = dead_letter_names(stack.queue)
    with stack.app.connection_for_write() as conn:
        Queue(queue, Exchange(exchange, type="direct"), routing_key=stack.queue)(conn).declare()


def _cleanup(stack: Stack) -> None:
    exchange, dead = dead_letter_names(stack.queue)
    if stack.kind == "redis":
        import redis

        client = redis.Redis.from_url(stack.url)
        for key in client.scan_iter(match=f"*{stack.queue}*"):
            client.delete(key)
        client.close()
        return
    with stack.app.connection_for_write() as conn:
        channel = conn.default_channel
        for queue in (stack.queue, dead, *stack.extra_queues):
            channel.queue_delete(queue)
        for name in (stack.queue, exchange, *stack.extra_queues):
            channel.exchange_delete(name)


@pytest.fixture(scope="module", params=["redis", "rabbitmq"])
def stack(
    request: pytest.FixtureRequest, site: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    kind = request.param
    require_broker(kind)
    queue = unique(f"bridge-celery-{kind}")
    tmp = tmp_path_factory.mktemp(f"celery-{kind}")
    events = Events(tmp / "events.jsonl")
    app = make_app(URLS[kind], queue, extensions=[FileRecorder(str(events.path))], autoload=False)
    stack = Stack(kind, queue, tmp, site, events, app)
    try:
        if kind == "rabbitmq":
            _declare_dead_letter_queue(stack)
        yield stack
    finally:
        bridge = install(app)
        assert isinstance(bridge, CeleryBridge)
        bridge.disconnect()
        _cleanup(stack)


@pytest.fixture(scope="module")
def worker(stack: Stack) -> Iterator[Process]:
    """A solo worker shared by the sequence tests of one broker."""
    process = stack.worker()
    try:
        process.wait_for_output("ready.")
        yield process
    finally:
        process.kill()


# -- jobs ------------------------------------------------------------------------------


def test_success_is_enqueued_started_completed(
    stack: Stack, worker: Process, embedded: dict[str, list[str]]
) -> None:
    result = stack.task("bridge.ok").delay(1)
    stack.events.wait_for("on_job_completed", result.id)
    events = stack.events.of(result.id)

    assert by_process(events) == {
        ME: ["on_job_enqueued"],
        worker.pid: ["on_job_started", "on_job_completed"],
    }
    assert across(events, ME, worker.pid) == embedded["success"]
    enqueued, started, completed = (
        next(e for e in events if e["hook"] == hook)
        for hook in ("on_job_enqueued", "on_job_started", "on_job_completed")
    )
    for event, state in ((enqueued, "pending"), (started, "running"), (completed, "completed")):
        job = event["job"]
        assert (job["name"], job["queue"], job["state"]) == ("bridge.ok", stack.queue, state)
        assert job["payload"] == {"args": [1], "kwargs": {}}
    assert started["job"]["started_at"].endswith("+00:00")
    assert completed["job"]["started_at"] == started["job"]["started_at"]
    assert completed["elapsed"] >= 0


def test_fails_twice_then_succeeds(
    stack: Stack, worker: Process, embedded: dict[str, list[str]]
) -> None:
    result = stack.task("bridge.flaky").delay(2)
    stack.events.wait_for("on_job_completed", result.id)
    stack.settle()
    events = stack.events.of(result.id)

    # The two retries re-publish the same task id from the worker: no enqueue there.
    assert by_process(events) == {
        ME: ["on_job_enqueued"],
        worker.pid: [
            "on_job_started",
            "on_job_retrying",
            "on_job_started",
            "on_job_retrying",
            "on_job_started",
            "on_job_completed",
        ],
    }
    # Like the embedded engine: on_job_started for every attempt.
    assert across(events, ME, worker.pid) == embedded["fails twice then succeeds"]
    retrying = [e for e in events if e["hook"] == "on_job_retrying"]
    assert [e["attempt"] for e in retrying] == [1, 2]
    assert [e["error"]["message"] for e in retrying] == ["attempt 1 fails", "attempt 2 fails"]
    assert all(e["next_run_at_utc"] for e in retrying)
    assert all(e["job"]["state"] == "retrying" for e in retrying)
    started = [e["job"]["retry_count"] for e in events if e["hook"] == "on_job_started"]
    assert started == [0, 1, 2]


def test_retries_exhausted_fails_once(
    stack: Stack, worker: Process, embedded: dict[str, list[str]]
) -> None:
    result = stack.task("bridge.doomed").delay()
    stack.events.wait_for("on_job_failed", result.id)
    stack.settle()
    events = stack.events.of(result.id)

    assert by_process(events) == {
        ME: ["on_job_enqueued"],
        worker.pid: ["on_job_started", "on_job_retrying", "on_job_started", "on_job_failed"],
    }
    # Where the engines differ: the embedded engine moves the job to its dead-letter
    # queue; Celery has none of its own, so there is no on_job_dlq.
    assert [*across(events, ME, worker.pid), "on_job_dlq"] == embedded["retries exhausted"]
    failed = the(events, "on_job_failed")
    assert failed["error"] == {"type": "ValueError", "message": "always fails"}
    assert failed["job"]["state"] == "failed"
    assert failed["job"]["max_retries"] == 1


@pytest.mark.parametrize("task", ["bridge.reject", "bridge.unacked_failure"])
def test_rejected_message_is_failed_then_dead_lettered_on_rabbitmq(
    stack: Stack, worker: Process, task: str
) -> None:
    """A message rejected without requeue (``Reject``, or ``acks_on_failure=False``).

    It reaches a dead-letter queue only where a dead-letter exchange takes it.
    """
    dead = dead_letter_names(stack.queue)[1]
    before = stack.queue_length(dead) if stack.kind == "rabbitmq" else 0
    result = stack.task(task).delay()
    stack.events.wait_for("on_job_failed", result.id)
    stack.settle()
    events = stack.events.of(result.id)

    if stack.kind == "rabbitmq":
        assert hooks(events, worker.pid) == ["on_job_started", "on_job_failed", "on_job_dlq"]
        assert stack.queue_length(dead) == before + 1
    else:  # Redis drops a rejected message: nothing is dead-lettered
        assert hooks(events, worker.pid) == ["on_job_started", "on_job_failed"]
    error_type = "Reject" if task == "bridge.reject" else "ValueError"
    assert the(events, "on_job_failed")["error"]["type"] == error_type


# -- workflows -------------------------------------------------------------------------


def test_chain_whose_middle_step_fails(
    stack: Stack, worker: Process, embedded: dict[str, list[str]]
) -> None:
    add, fail = stack.task("bridge.step_add"), stack.task("bridge.step_fail")
    last = chain(add.s(1), fail.s(), add.s()).apply_async()
    middle, first = last.parent, last.parent.parent
    run_id = first.id
    stack.events.wait_for("on_workflow_failed", run_id)
    stack.settle()
    ids = {run_id, middle.id, last.id}
    events = [
        e for e in stack.events.read() if (e.get("job") or e.get("run") or {}).get("id") in ids
    ]

    assert hooks(events, worker.pid) == [
        "on_workflow_started",
        "on_job_started",  # step 1
        "on_job_enqueued",  # step 2, published by the worker before step 1 completes
        "on_job_completed",  # step 1
        "on_workflow_step_completed",
        "on_job_started",  # step 2
        "on_job_failed",
        "on_workflow_step_failed",
        "on_workflow_failed",
    ]
    assert not [e for e in events if (e.get("job") or {}).get("id") == last.id]
    runs = [e for e in events if "run" in e]
    # The run-level hooks agree with an embedded workflow whose middle step fails; on
    # Celery each step is also a job of its own, with its job hooks.
    assert hooks(runs) == embedded["workflow whose middle step fails"]
    assert {e["run"]["id"] for e in runs} == {run_id}
    assert {e["run"]["name"] for e in runs} == {
        "bridge.step_add | bridge.step_fail | bridge.step_add"
    }
    assert [e.get("step") for e in runs] == [
        None,
        "bridge.step_add",
        "bridge.step_fail",
        None,
    ]
    assert runs[0]["run"]["input"] == {"args": [1], "kwargs": {}}
    assert runs[-1]["run"]["state"] == "failed"
    assert runs[-1]["error"] == {"type": "ValueError", "message": "step got 2 and fails"}


def test_chain_that_completes(stack: Stack, worker: Process) -> None:
    add = stack.task("bridge.step_add")
    last = chain(add.s(1), add.s(), add.s(y=10)).apply_async()
    run_id = last.parent.parent.id
    stack.events.wait_for("on_workflow_completed", run_id)
    runs = [e for e in stack.events.of(run_id) if "run" in e]

    assert hooks(runs) == [
        "on_workflow_started",
        "on_workflow_step_completed",
        "on_workflow_step_completed",
        "on_workflow_step_completed",
        "on_workflow_completed",
    ]
    done = runs[-1]
    assert done["run"]["output"] == 13
    assert done["run"]["state"] == "completed"
    assert done["run"]["started_at"] == runs[0]["run"]["started_at"]
    assert done["elapsed"] >= max(e["elapsed"] for e in runs[1:-1])


def test_chain_whose_first_step_retries(stack: Stack, worker: Process) -> None:
    """A retried step stays in its run: the run starts once and still completes."""
    flaky, add = stack.task("bridge.flaky"), stack.task("bridge.step_add")
    last = chain(flaky.si(1), add.si(5)).apply_async()
    run_id = last.parent.id
    stack.events.wait_for("on_workflow_completed", run_id)
    events = [e for e in stack.events.read() if e["pid"] == worker.pid]
    ids = {run_id, last.id}
    events = [e for e in events if (e.get("job") or e.get("run") or {}).get("id") in ids]

    assert hooks(events) == [
        "on_workflow_started",
        "on_job_started",
        "on_job_retrying",
        "on_job_started",
        "on_job_enqueued",
        "on_job_completed",
        "on_workflow_step_completed",
        "on_job_started",
        "on_job_completed",
        "on_workflow_step_completed",
        "on_workflow_completed",
    ]
    assert [e["step"] for e in events if e["hook"] == "on_workflow_step_completed"] == [
        "bridge.flaky",
        "bridge.step_add",
    ]
    assert the(events, "on_workflow_completed")["run"]["output"] == 6


def test_chain_across_pool_processes(stack: Stack) -> None:
    """Steps run in any pool process: the run travels with the messages, not in memory."""
    queue = stack.private_queue()
    process = stack.worker(queue=queue, pool="prefork", concurrency=2)
    try:
        process.wait_for_output("ready.")
        add = stack.task("bridge.step_add")
        steps = [add.s(1), add.s(), add.s(), add.s()]
        last = chain(*(step.set(queue=queue) for step in steps)).apply_async()
        run_id = last.parent.parent.parent.id
        stack.events.wait_for("on_workflow_completed", run_id)
    finally:
        process.kill()
    runs = [e for e in stack.events.of(run_id) if "run" in e]

    assert Counter(hooks(runs)) == {
        "on_workflow_started": 1,
        "on_workflow_step_completed": 4,
        "on_workflow_completed": 1,
    }
    assert runs[0]["hook"] == "on_workflow_started"
    assert len({(e["run"]["name"], e["run"]["started_at"]) for e in runs}) == 1
    completed = next(e for e in runs if e["hook"] == "on_workflow_completed")
    assert completed["run"]["output"] == 5
    assert process.pid not in {e["pid"] for e in runs}


# -- cron ------------------------------------------------------------------------------


def test_beat_publish_is_enqueued_then_cron_fired(
    stack: Stack, worker: Process, embedded: dict[str, list[str]]
) -> None:
    beat = stack.worker(command="beat", env={"BRIDGE_BEAT": "1"})
    try:
        events = stack.events.wait(
            lambda evs: any(e["hook"] == "on_cron_fired" for e in evs), "a cron fire from beat"
        )
    finally:
        beat.stop()
    fired = next(e for e in events if e["hook"] == "on_cron_fired")
    job_id = fired["job"]["id"]
    stack.events.wait_for("on_job_completed", job_id)
    events = stack.events.of(job_id)

    assert by_process(events) == {
        beat.pid: ["on_job_enqueued", "on_cron_fired"],
        worker.pid: ["on_job_started", "on_job_completed"],
    }
    assert across(events, beat.pid, worker.pid) == embedded["cron"]
    entry = fired["entry"]
    assert (entry["name"], entry["job_name"]) == ("tick", "bridge.ok")
    assert entry["schedule"] == "every 1s"
    assert entry["payload"] == {"args": [41], "kwargs": {}}
    assert entry["next_run_at"].endswith("+00:00")


# -- process life ----------------------------------------------------------------------


@pytest.mark.parametrize(("pool", "concurrency"), [("solo", 1), ("prefork", 2)])
def test_shutdown_once_per_worker_process(stack: Stack, pool: str, concurrency: int) -> None:
    process = stack.worker(queue=stack.private_queue(), pool=pool, concurrency=concurrency)
    try:
        process.wait_for_output("ready.")
        # The events of this worker alone: everything written from now on by its pids.
        before = len(stack.events.read())
        assert process.stop() == 0, process.tail()
    finally:
        process.kill()
    shutdowns = [e["pid"] for e in stack.events.read()[before:] if e["hook"] == "on_shutdown"]

    if pool == "solo":
        assert shutdowns == [process.pid]
    else:
        # Each pool process discovered its extensions when it booted and says goodbye
        # once; the main process ran no task and built no registry.
        assert len(shutdowns) == concurrency
        assert Counter(shutdowns) == dict.fromkeys(shutdowns, 1)
        assert process.pid not in shutdowns


def test_faulty_extension_changes_no_outcome(stack: Stack) -> None:
    """An extension raising everywhere (strict registry, slow async hook) breaks nothing."""
    queue = stack.private_queue()
    process = stack.worker(
        queue=queue, enable=("faulty", "recorder"), env={"DISPATCH_EXT_STRICT": "1"}
    )
    try:
        process.wait_for_output("ready.")
        ok = stack.send("bridge.ok", 1, queue=queue)
        flaky = stack.send("bridge.flaky", 1, queue=queue)
        stack.events.wait_for("on_job_completed", ok.id)
        stack.events.wait_for("on_job_completed", flaky.id)
        assert process.stop() == 0, process.tail()
    finally:
        process.kill()

    assert hooks(stack.events.of(ok.id), process.pid) == ["on_job_started", "on_job_completed"]
    assert hooks(stack.events.of(flaky.id), process.pid) == [
        "on_job_started",
        "on_job_retrying",
        "on_job_started",
        "on_job_completed",
    ]
    log = process.output()
    assert "faulty extension raised in on_job_completed" in log
    assert "timed out in on_job_started" in log
    assert stack.queue_length(queue) == 0  # every message was acknowledged (acks_late)
