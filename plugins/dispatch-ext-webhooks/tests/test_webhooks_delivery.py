"""Delivery to real HTTP receivers on 127.0.0.1, each request verified with standardwebhooks."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from dispatch_ext_webhooks import EVENT_TYPES, HOOK_EVENTS, WebhookExtension, generate_secret
from dispatch_ext_webhooks.receiver import Delivery, Receiver
from standardwebhooks import Webhook

from dispatch_ext import CronEntry, Job, Registry, RunState, WorkflowRun

UTC = dt.timezone.utc
NOW = dt.datetime(2025, 1, 2, 10, 0, tzinfo=UTC)
JOB = Job(id="job-1", name="send_email", queue="mail", payload={"to": "ada@example.com"})
RUN = WorkflowRun(id="run-1", name="onboard", state=RunState.RUNNING, input={"user": 7})
ENTRY = CronEntry(name="nightly", schedule="0 3 * * *", job_name="report", next_run_at=NOW)
INTERNATIONAL = "Zahlung abgelehnt: Müller, Ærø, Ελληνικά 🙂 line\u2028separator"


class CardDeclined(Exception):
    pass


# hook -> (kwargs, what its event's data must hold)
CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "on_job_enqueued": ({"job": JOB}, {"job": JOB.to_dict()}),
    "on_job_started": ({"job": JOB}, {"job": JOB.to_dict()}),
    "on_job_completed": (
        {"job": JOB, "elapsed": dt.timedelta(milliseconds=1500)},
        {"job": JOB.to_dict(), "elapsed": 1.5},
    ),
    "on_job_failed": (
        {"job": JOB, "error": CardDeclined(INTERNATIONAL)},
        {
            "job": JOB.to_dict(),
            "error": {"type": f"{__name__}.CardDeclined", "message": INTERNATIONAL},
        },
    ),
    "on_job_retrying": (
        {"job": JOB, "error": TimeoutError("slow"), "attempt": 2, "next_run_at": NOW},
        {
            "job": JOB.to_dict(),
            "error": {"type": "TimeoutError", "message": "slow"},
            "attempt": 2,
            "next_run_at": NOW.isoformat(),
        },
    ),
    "on_job_dlq": (
        {"job": JOB, "error": ValueError("bad")},
        {"job": JOB.to_dict(), "error": {"type": "ValueError", "message": "bad"}},
    ),
    "on_workflow_started": ({"run": RUN}, {"run": RUN.to_dict()}),
    "on_workflow_step_completed": (
        {"run": RUN, "step": "welcome", "elapsed": dt.timedelta(seconds=2)},
        {"run": RUN.to_dict(), "step": "welcome", "elapsed": 2.0},
    ),
    "on_workflow_step_failed": (
        {"run": RUN, "step": "charge", "error": KeyError("card")},
        {
            "run": RUN.to_dict(),
            "step": "charge",
            "error": {"type": "KeyError", "message": "'card'"},
        },
    ),
    "on_workflow_completed": (
        {"run": RUN, "elapsed": dt.timedelta(seconds=5)},
        {"run": RUN.to_dict(), "elapsed": 5.0},
    ),
    "on_workflow_failed": (
        {"run": RUN, "error": RuntimeError("stop")},
        {"run": RUN.to_dict(), "error": {"type": "RuntimeError", "message": "stop"}},
    ),
    "on_cron_fired": (
        {"entry": ENTRY, "job": JOB},
        {"entry": ENTRY.to_dict(), "job": JOB.to_dict()},
    ),
}


def registry_with(ext: WebhookExtension) -> Registry:
    registry = Registry(strict=True)
    registry.register(ext)
    return registry


def verified(delivery: Delivery, secret: str) -> Any:
    """The event, after checking the raw body with the reference verifier."""
    return Webhook(secret).verify(delivery.body, delivery.headers)


def test_every_event_type_is_delivered_signed_and_verifiable(
    make_extension: Callable[..., WebhookExtension],
    serve: Callable[..., Receiver],
    secret: str,
) -> None:
    receiver = serve(secret)
    registry = registry_with(make_extension(url=receiver.url, secret=secret))
    for hook, (kwargs, _) in CASES.items():
        registry.emit(hook, **kwargs)
    registry.emit("on_shutdown")  # sends nothing itself
    assert receiver.wait_for(len(CASES))
    deliveries = receiver.deliveries
    assert len(deliveries) == len(CASES) == len(EVENT_TYPES)
    by_type = {}
    for delivery in deliveries:
        event = verified(delivery, secret)
        assert set(event) == {"type", "timestamp", "data"}
        assert delivery.headers["content-type"] == "application/json"
        assert delivery.msg_id.startswith("msg_")
        assert delivery.headers["webhook-signature"].startswith("v1,")
        dt.datetime.fromisoformat(event["timestamp"].replace("Z", "+00:00"))
        by_type[event["type"]] = event
    assert sorted(by_type) == sorted(EVENT_TYPES)
    for hook, (_, data) in CASES.items():
        assert by_type[HOOK_EVENTS[hook]]["data"] == data, hook
    assert len({d.msg_id for d in deliveries}) == len(deliveries)


def test_non_ascii_emoji_and_line_separators_survive_the_signature(
    make_extension: Callable[..., WebhookExtension],
    serve: Callable[..., Receiver],
    secret: str,
) -> None:
    receiver = serve(secret)
    registry = registry_with(make_extension(url=receiver.url, secret=secret))
    registry.emit("on_job_failed", job=JOB, error=CardDeclined(INTERNATIONAL))
    assert receiver.wait_for(1)
    (delivery,) = receiver.deliveries
    assert verified(delivery, secret)["data"]["error"]["message"] == INTERNATIONAL
    # The body travels as ASCII: no proxy or charset guess can change the signed bytes,
    # and U+2028 cannot break a line-oriented reader.
    assert delivery.body.isascii()
    assert b"\\u2028" in delivery.body
    assert len(delivery.body.splitlines()) == 1


def test_an_event_of_about_one_megabyte_is_delivered_and_verifies(
    make_extension: Callable[..., WebhookExtension],
    serve: Callable[..., Receiver],
    secret: str,
) -> None:
    receiver = serve(secret)
    registry = registry_with(make_extension(url=receiver.url, secret=secret))
    payload = {"rows": ["é" * 100 + str(i) for i in range(10_000)]}
    big = Job(id="big", name="import", payload=payload)
    registry.emit("on_job_enqueued", job=big)
    assert receiver.wait_for(1)
    (delivery,) = receiver.deliveries
    assert len(delivery.body) > 1_000_000
    assert verified(delivery, secret)["data"]["job"]["payload"] == payload


def test_a_receiver_that_fails_three_times_still_gets_every_event_once(
    make_extension: Callable[..., WebhookExtension],
    serve: Callable[..., Receiver],
    secret: str,
) -> None:
    receiver = serve(secret, respond=lambda d: 503 if d.number <= 3 else 200)
    ext = make_extension(url=receiver.url, secret=secret)
    registry = registry_with(ext)
    for i in range(10):
        registry.emit("on_job_enqueued", job=Job(id=f"job-{i}", name="a", payload=i))
    assert ext.flush(20)
    assert receiver.wait_for(10)
    deliveries = receiver.deliveries
    assert [d.status for d in deliveries[:3]] == [503, 503, 503]
    assert all(d.verified for d in deliveries)
    acknowledged = Counter(d.msg_id for d in deliveries if d.status == 200)
    refused = {d.msg_id for d in deliveries if d.status == 503}
    # Each message was sent until acknowledged, then never again.
    assert len(acknowledged) == 10
    assert set(acknowledged.values()) == {1}
    assert refused <= set(acknowledged)
    # A retry is the same message: same id, same body, a fresh signature.
    for msg_id in refused:
        bodies = {d.body for d in deliveries if d.msg_id == msg_id}
        assert len(bodies) == 1
    payloads = sorted(event["data"]["job"]["payload"] for event in receiver.accepted.values())
    assert payloads == list(range(10))
    assert ext.counts() == {}
    assert ext.stats.delivered == 10
    assert ext.stats.retried == 3


def test_retry_after_is_followed(
    make_extension: Callable[..., WebhookExtension],
    serve: Callable[..., Receiver],
    secret: str,
) -> None:
    receiver = serve(
        secret, respond=lambda d: (429, {"Retry-After": "1"}) if d.number == 1 else 204
    )
    ext = make_extension(url=receiver.url, secret=secret, backoff_base=0.01, backoff_max=5)
    registry_with(ext).emit("on_job_enqueued", job=JOB)
    assert receiver.wait_for(1, timeout=10)
    first, second = receiver.deliveries
    assert first.status == 429
    assert second.status == 204
    waited = int(second.headers["webhook-timestamp"]) - int(first.headers["webhook-timestamp"])
    assert waited >= 1  # not the 10 ms backoff: the receiver's one second


def test_410_gone_disables_the_endpoint(
    make_extension: Callable[..., WebhookExtension],
    serve: Callable[..., Receiver],
    secret: str,
    outbox_path: Path,
) -> None:
    gone = serve(secret, respond=lambda d: 410)
    ext = make_extension(url=gone.url, secret=secret)
    registry = registry_with(ext)
    for i in range(5):
        registry.emit("on_job_enqueued", job=Job(id=f"job-{i}", name="a"))
    assert ext.flush(10)
    assert len(gone.deliveries) == 1  # one 410, then nothing more
    failures = ext.failures()
    assert len(failures) == 5
    assert {f.state for f in failures} == {"cancelled"}
    assert all("410 Gone" in f.reason for f in failures)
    assert "endpoint disabled" in ext.status_detail
    registry.emit("on_job_enqueued", job=Job(id="later", name="a"))
    assert ext.flush(1)
    assert len(gone.deliveries) == 1
    # The disable is kept in the outbox: a new process does not send either.
    again = make_extension(url=gone.url, secret=secret)
    registry_with(again).emit("on_job_enqueued", job=Job(id="after-restart", name="a"))
    assert again.flush(1)
    assert len(gone.deliveries) == 1
    with closing(sqlite3.connect(outbox_path)) as conn:
        ((reason,),) = conn.execute("SELECT reason FROM endpoints").fetchall()
    assert "410 Gone" in reason
    # Re-enabled, the cancelled messages go out.
    gone.respond_with(lambda d: 204)
    assert again.enable_endpoint(gone.url) == 5
    assert again.flush(10)
    assert gone.wait_for(5)


def test_a_4xx_gives_up_on_the_message_and_records_why(
    make_extension: Callable[..., WebhookExtension],
    serve: Callable[..., Receiver],
    secret: str,
) -> None:
    receiver = serve(secret, respond=lambda d: 400 if d.number == 1 else 204)
    ext = make_extension(url=receiver.url, secret=secret)
    registry = registry_with(ext)
    registry.emit("on_job_enqueued", job=Job(id="refused", name="a"))
    assert ext.flush(10)
    registry.emit("on_job_enqueued", job=Job(id="accepted", name="a"))
    assert ext.flush(10)
    assert [d.status for d in receiver.deliveries] == [400, 204]  # never retried
    (failure,) = ext.failures()
    assert failure.state == "failed"
    assert failure.last_status == 400
    assert failure.msg_id == receiver.deliveries[0].msg_id
    assert "HTTP 400 Bad Request" in failure.reason
    assert "given up" in ext.status_detail
    assert "1 given up" in ext.status_detail


def test_a_redirect_is_not_followed(
    make_extension: Callable[..., WebhookExtension],
    serve: Callable[..., Receiver],
    secret: str,
) -> None:
    receiver = serve(secret, respond=lambda d: (301, {"Location": "https://elsewhere/"}))
    ext = make_extension(url=receiver.url, secret=secret)
    registry_with(ext).emit("on_job_enqueued", job=JOB)
    assert ext.flush(10)
    (failure,) = ext.failures()
    assert "redirects are not followed" in failure.reason
    assert len(receiver.deliveries) == 1


def test_retries_end_after_max_attempts(
    make_extension: Callable[..., WebhookExtension],
    serve: Callable[..., Receiver],
    secret: str,
) -> None:
    receiver = serve(secret, respond=lambda d: 500)
    ext = make_extension(url=receiver.url, secret=secret, max_attempts=3)
    registry_with(ext).emit("on_job_enqueued", job=JOB)
    assert ext.flush(10)
    assert len(receiver.deliveries) == 3
    (failure,) = ext.failures()
    assert failure.attempts == 3
    assert failure.reason.startswith("gave up after 3 attempts; last: HTTP 500")


def test_network_errors_are_retried(
    make_extension: Callable[..., WebhookExtension],
    secret: str,
) -> None:
    receiver = Receiver(secret)
    url = receiver.url
    receiver.stop()  # nothing listens on that port now
    ext = make_extension(url=url, secret=secret)
    registry_with(ext).emit("on_job_enqueued", job=JOB)
    deadline = time.monotonic() + 10
    while ext.stats.retried < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ext.counts() == {"pending": 1}
    assert ext.stats.retried >= 2  # connection refused, twice: retried, not given up
    with Receiver(secret, port=int(url.split(":")[2].split("/")[0])) as back:
        assert ext.flush(20)
        assert back.wait_for(1)
    assert ext.stats.delivered == 1


def test_each_endpoint_gets_its_events_signed_with_its_secret(
    make_extension: Callable[..., WebhookExtension],
    serve: Callable[..., Receiver],
) -> None:
    everything_secret, failures_secret = generate_secret(), generate_secret()
    everything = serve(everything_secret)
    failures = serve(failures_secret)
    ext = make_extension(
        endpoints=[
            {"url": everything.url, "secret": everything_secret},
            {"url": failures.url, "secret": failures_secret, "events": ["job.failed", "job.dlq"]},
        ]
    )
    registry = registry_with(ext)
    for hook, (kwargs, _) in CASES.items():
        registry.emit(hook, **kwargs)
    assert ext.flush(10)
    assert len(everything.accepted) == len(CASES)
    assert sorted(e["type"] for e in failures.accepted.values()) == [
        "dispatch.job.dlq",
        "dispatch.job.failed",
    ]
    assert all(d.verified for d in everything.deliveries + failures.deliveries)
    # Each endpoint's signature is made with its own secret only.
    with pytest.raises(Exception, match="No matching signature"):
        verified(failures.deliveries[0], everything_secret)
    # One event, one webhook-id, whichever endpoint gets it.
    assert set(failures.accepted) <= set(everything.accepted)


def test_a_rotating_receiver_accepts_either_secret(
    make_extension: Callable[..., WebhookExtension],
    serve: Callable[..., Receiver],
) -> None:
    old, new = generate_secret(), generate_secret()
    receiver = serve(new)
    ext = make_extension(url=receiver.url, secret=[old, new])
    registry_with(ext).emit("on_job_enqueued", job=JOB)
    assert receiver.wait_for(1)
    (delivery,) = receiver.deliveries
    assert len(delivery.headers["webhook-signature"].split(" ")) == 2
    assert verified(delivery, old) == verified(delivery, new)


def test_shutdown_drains_up_to_its_deadline_and_the_rest_goes_out_after_restart(
    make_extension: Callable[..., WebhookExtension],
    serve: Callable[..., Receiver],
    secret: str,
) -> None:
    release = threading.Event()

    def slow(delivery: Delivery) -> int:
        release.wait(10)
        return 204

    receiver = serve(secret, respond=slow)
    ext = make_extension(url=receiver.url, secret=secret, shutdown_timeout=0.3)
    registry = registry_with(ext)
    for i in range(5):
        registry.emit("on_job_enqueued", job=Job(id=f"job-{i}", name="a", payload=i))
    registry.emit("on_shutdown")  # returns at the deadline, the receiver still busy
    assert not release.is_set()
    assert ext.counts()["pending"] >= 4
    stored = {d.msg_id for d in receiver.deliveries}
    release.set()
    restarted = make_extension(url=receiver.url, secret=secret)
    restarted.start()  # the next run: no new event needed
    assert receiver.wait_for(5, timeout=30)
    assert restarted.flush(30)
    payloads = sorted(event["data"]["job"]["payload"] for event in receiver.accepted.values())
    assert payloads == [0, 1, 2, 3, 4]
    assert stored <= set(receiver.accepted)


def test_hooks_return_before_a_slow_receiver_answers(
    make_extension: Callable[..., WebhookExtension],
    serve: Callable[..., Receiver],
    secret: str,
) -> None:
    release = threading.Event()
    receiver = serve(secret, respond=lambda d: 204 if release.wait(10) else 503)
    ext = make_extension(url=receiver.url, secret=secret)
    registry = registry_with(ext)
    for i in range(50):
        registry.emit("on_job_enqueued", job=Job(id=f"job-{i}", name="a"))
    # Every event is in the outbox while the receiver has not answered once.
    assert ext.counts() == {"pending": 50}
    assert all(d.status == 0 for d in receiver.deliveries)
    release.set()
    assert ext.flush(30)
    assert receiver.wait_for(50)


def test_the_outbox_holds_the_exact_signed_body(
    make_extension: Callable[..., WebhookExtension],
    serve: Callable[..., Receiver],
    secret: str,
    outbox_path: Path,
) -> None:
    receiver = serve(secret, respond=lambda d: 503)
    ext = make_extension(url=receiver.url, secret=secret, backoff_base=5, backoff_max=5)
    registry_with(ext).emit("on_job_enqueued", job=JOB)
    with closing(sqlite3.connect(outbox_path)) as conn:
        ((msg_id, body, state),) = conn.execute("SELECT msg_id, body, state FROM messages")
    assert state == "pending"
    assert json.loads(body)["data"]["job"] == JOB.to_dict()
    assert receiver.wait_for_requests(1)
    assert ext.counts() == {"pending": 1}
    for delivery in receiver.deliveries:
        assert delivery.msg_id == msg_id
        assert delivery.body == body


def test_messages_left_by_an_earlier_run_go_out_at_the_latest_at_shutdown(
    make_extension: Callable[..., WebhookExtension],
    serve: Callable[..., Receiver],
    secret: str,
) -> None:
    down = serve(secret, respond=lambda d: 503)
    first = make_extension(url=down.url, secret=secret, backoff_base=0.01, backoff_max=0.01)
    registry = registry_with(first)
    for i in range(3):
        registry.emit("on_job_enqueued", job=Job(id=f"job-{i}", name="a"))
    registry.emit("on_shutdown")
    assert first.counts() == {"pending": 3}
    down.respond_with(lambda d: 204)
    # The next run hears no event at all; its shutdown still delivers what was left.
    second = make_extension(url=down.url, secret=secret, shutdown_timeout=20)
    registry_with(second).emit("on_shutdown")
    assert second.counts() == {}
    assert len(down.accepted) == 3


def test_senders_sharing_one_outbox_never_send_a_message_twice(
    make_extension: Callable[..., WebhookExtension],
    serve: Callable[..., Receiver],
    secret: str,
) -> None:
    receiver = serve(secret, delay=0.002)
    one = make_extension(url=receiver.url, secret=secret)
    other = make_extension(url=receiver.url, secret=secret)
    registries = [registry_with(one), registry_with(other)]
    for i in range(200):
        registries[i % 2].emit("on_job_enqueued", job=Job(id=f"job-{i}", name="a", payload=i))
    assert one.flush(30)
    assert other.flush(30)
    assert receiver.wait_for(200)
    ids = [d.msg_id for d in receiver.deliveries]
    assert len(ids) == len(set(ids)) == 200
    assert one.stats.delivered > 0
    assert other.stats.delivered > 0
    assert one.stats.delivered + other.stats.delivered == 200
