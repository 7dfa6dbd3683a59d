"""A process killed with SIGKILL loses no accepted event: the next start delivers them all."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest
from dispatch_ext_webhooks import WebhookExtension
from dispatch_ext_webhooks.receiver import Delivery, Receiver

PRODUCER = textwrap.dedent(
    """
    import sys, time
    from dispatch_ext import Job, Registry
    from dispatch_ext_webhooks import WebhookExtension

    url, secret, outbox = sys.argv[1:4]
    ext = WebhookExtension(
        url=url, secret=secret, outbox_path=outbox, timeout=30.0,
        backoff_base=0.05, backoff_max=0.2,
    )
    registry = Registry(strict=True)
    registry.register(ext)
    for i in range(100):
        registry.emit("on_job_enqueued", job=Job(id=f"job-{i}", name="import", payload=i))
    print("accepted", flush=True)
    time.sleep(120)
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="SIGKILL is POSIX")
def test_events_left_by_a_killed_process_go_out_after_the_next_start(
    serve: Callable[..., Receiver],
    make_extension: Callable[..., WebhookExtension],
    secret: str,
    outbox_path: Path,
) -> None:
    down = True
    hang = threading.Event()

    def respond(delivery: Delivery) -> int:
        if not down:
            return 204
        if delivery.number >= 4:  # keep the producer waiting on this one
            hang.wait(60)
        return 503

    receiver = serve(secret, respond=respond)
    producer = subprocess.Popen(
        [sys.executable, "-c", PRODUCER, receiver.url, secret, str(outbox_path)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert producer.stdout is not None
        assert producer.stdout.readline().strip() == "accepted"
        # The producer's sender got three 503s and waits for a fourth answer when the
        # process is killed.
        assert receiver.wait_for_requests(4, timeout=30)
        os.kill(producer.pid, signal.SIGKILL)
        assert producer.wait(timeout=30) == -signal.SIGKILL
    finally:
        if producer.poll() is None:
            producer.kill()
            producer.wait()
        if producer.stdout is not None:
            producer.stdout.close()
    tried_before = {d.msg_id for d in receiver.deliveries}

    with closing(sqlite3.connect(outbox_path)) as conn:
        stored = dict(conn.execute("SELECT msg_id, state FROM messages").fetchall())
        leased = conn.execute(
            "SELECT msg_id FROM messages WHERE lease_until > ?", (time.time() + 60,)
        ).fetchall()
    assert len(stored) == 100
    assert set(stored.values()) == {"pending"}
    assert tried_before <= set(stored)
    # The message in flight, and the rest of its batch, are still claimed by the dead
    # process, for minutes.
    assert (receiver.deliveries[3].msg_id,) in leased

    down = False
    hang.set()
    ext = make_extension(url=receiver.url, secret=secret, timeout=1.0)
    ext.start()
    assert receiver.wait_for(100, timeout=60)
    assert ext.flush(30)
    accepted = receiver.accepted
    assert set(accepted) == set(stored)  # every one, with its original webhook-id
    assert sorted(event["data"]["job"]["payload"] for event in accepted.values()) == list(
        range(100)
    )
    assert all(d.verified for d in receiver.deliveries)
    assert ext.counts() == {}
