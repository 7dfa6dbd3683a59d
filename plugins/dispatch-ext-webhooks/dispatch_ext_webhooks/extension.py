"""The webhooks extension: every lifecycle event, signed, to one or more HTTP endpoints.

A hook builds the event's body, appends it to the outbox (committed before the hook
returns) and wakes the sender; it never waits for a receiver. The senders are daemon
threads, one per endpoint, started with the first event (or :meth:`start`).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .events import EVENT_TYPES, encode_envelope, error_data, new_message_id
from .outbox import FailedDelivery, Outbox, read_summary
from .sender import DeliveryStats, EndpointSender, SenderSettings
from .settings import (
    ENV_OUTBOX,
    Endpoint,
    parse_endpoints,
    positive,
    seconds,
    synchronous_mode,
)

if TYPE_CHECKING:
    from dispatch_ext import CronEntry, Job, WorkflowRun

__all__ = ["DEFAULT_OUTBOX", "INACTIVE", "WebhookExtension"]

logger = logging.getLogger("dispatch_ext_webhooks")

DEFAULT_OUTBOX = "dispatch-webhooks.sqlite3"
"""The outbox file, in the current directory, when no path is configured."""

INACTIVE = (
    "inactive: no endpoint configured (set url/secret in [extensions.webhooks] "
    "or DISPATCH_WEBHOOKS_URL)"
)

_INSTANCES: weakref.WeakSet[WebhookExtension] = weakref.WeakSet()


class WebhookExtension:
    """Sends every lifecycle event as a Standard Webhooks request, from a durable outbox.

    With no endpoint configured (no argument and no ``DISPATCH_WEBHOOKS_URL``) the
    extension loads, says it is inactive in :attr:`status_detail`, and its hooks do
    nothing.

    Args:
        url: The one endpoint's URL (shorthand for a single ``endpoints`` entry);
            defaults to ``DISPATCH_WEBHOOKS_URL`` when ``endpoints`` is not given either.
        secret: Its signing secret, ``whsec_`` + base64 (or a list, to sign with each
            while a receiver rotates keys); defaults to ``DISPATCH_WEBHOOKS_SECRET``.
        outbox_path: The SQLite outbox file; defaults to ``DISPATCH_WEBHOOKS_OUTBOX``,
            else ``dispatch-webhooks.sqlite3`` in the current directory.
        events: Event types the shorthand endpoint wants (list or comma-separated;
            ``job.failed`` and patterns such as ``dispatch.workflow.*`` work too); all
            by default, or ``DISPATCH_WEBHOOKS_EVENTS``.
        endpoints: More endpoints: a list of mappings with ``url``, ``secret`` (or
            ``secret_env``, the name of an environment variable holding it) and
            ``events``.
        timeout: Seconds for each HTTP request (connect, send, wait for the answer).
        shutdown_timeout: Seconds ``on_shutdown`` keeps delivering before it returns;
            what is left is sent after the next start, with the same ``webhook-id``.
        max_attempts: Attempts per message before it is given up (retryable failures).
        backoff_base: Seconds before the first retry; doubles with each failure.
        backoff_max: Longest wait between attempts, also the cap on ``Retry-After``.
        poll_interval: Seconds between looks at the outbox when idle (picks up rows
            written by other processes sharing the file).
        synchronous: SQLite ``synchronous`` mode of the outbox: ``NORMAL`` survives a
            killed process, ``FULL`` also a power cut (one fsync per event).
    """

    name = "webhooks"

    def __init__(
        self,
        url: str | None = None,
        secret: str | list[str] | None = None,
        outbox_path: str | os.PathLike[str] | None = None,
        events: str | Sequence[str] | None = None,
        endpoints: Sequence[Mapping[str, Any]] | None = None,
        timeout: float = 10.0,
        *,
        shutdown_timeout: float = 5.0,
        max_attempts: int = 20,
        backoff_base: float = 1.0,
        backoff_max: float = 600.0,
        poll_interval: float = 1.0,
        synchronous: str = "NORMAL",
    ) -> None:
        self.endpoints: tuple[Endpoint, ...] = parse_endpoints(
            url=url, secret=secret, events=events, endpoints=endpoints
        )
        path = outbox_path or os.environ.get(ENV_OUTBOX) or DEFAULT_OUTBOX
        self.outbox_path = Path(os.path.abspath(os.path.expanduser(os.fspath(path))))
        self.shutdown_timeout = seconds(shutdown_timeout, "shutdown_timeout")
        self.settings = SenderSettings(
            outbox_path=self.outbox_path,
            synchronous=synchronous_mode(synchronous),
            timeout=positive(timeout, "timeout"),
            max_attempts=positive(max_attempts, "max_attempts", integer=True),
            backoff_base=positive(backoff_base, "backoff_base"),
            backoff_max=positive(backoff_max, "backoff_max"),
            poll_interval=positive(poll_interval, "poll_interval"),
        )
        self.stats = DeliveryStats()
        self._by_url = {endpoint.url: endpoint for endpoint in self.endpoints}
        self._disabled: dict[str, str] = {}
        self._routes = self._route()
        self._reset()
        _INSTANCES.add(self)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._writer: Outbox | None = None
        self._senders: dict[str, EndpointSender] = {}

    def _route(self) -> dict[str, tuple[str, ...]]:
        return {
            event_type: tuple(
                e.url for e in self.endpoints if e.wants(event_type) and e.url not in self._disabled
            )
            for event_type in EVENT_TYPES
        }

    def __repr__(self) -> str:
        endpoints = list(self.endpoints)
        return f"WebhookExtension(endpoints={endpoints!r}, outbox_path={str(self.outbox_path)!r})"

    @property
    def active(self) -> bool:
        """Whether at least one endpoint is configured."""
        return bool(self.endpoints)

    @property
    def status_detail(self) -> str:
        """One line for ``dispatch-ext list``/``info``: endpoints and outbox state."""
        if not self.endpoints:
            return INACTIVE
        labels = ", ".join(endpoint.label for endpoint in self.endpoints)
        detail = f"{len(self.endpoints)} endpoint(s): {labels}; outbox {self.outbox_path}"
        try:
            summary = read_summary(self.outbox_path)
        except Exception as exc:
            return f"{detail} (unreadable: {exc})"
        if summary is None:
            return f"{detail} (not created yet)"
        counts, disabled = summary
        detail += f"; {counts.get('pending', 0)} pending, {counts.get('failed', 0)} given up"
        for url, reason in sorted(disabled.items()):
            if url in self._by_url:
                detail += f"; {self._by_url[url].label} {reason}"
        return detail

    # -- the outbox and the senders -----------------------------------------------------

    def _open_writer(self) -> Outbox:
        writer = self._writer
        if writer is None:
            writer = self._writer = Outbox(self.outbox_path, synchronous=self.settings.synchronous)
            self._disabled = {url: r for url, r in writer.disabled().items() if url in self._by_url}
            self._routes = self._route()
        return writer

    def _start_senders(self) -> dict[str, EndpointSender]:
        senders = self._senders
        if len(senders) != len(self.endpoints):
            for endpoint in self.endpoints:
                if endpoint.url not in senders:
                    sender = EndpointSender(
                        endpoint, self.settings, self.stats, self._endpoint_disabled
                    )
                    senders[endpoint.url] = sender
                    sender.start()
        return senders

    def _endpoint_disabled(self, url: str, reason: str) -> None:
        with self._lock:
            self._disabled[url] = reason
            self._routes = self._route()

    def _publish(self, event_type: str, build: Callable[[], dict[str, Any]]) -> None:
        if not self._routes[event_type]:
            return
        now = time.time()
        body = encode_envelope(event_type, build(), now)
        msg_id = new_message_id()
        with self._lock:
            writer = self._open_writer()
            targets = self._routes[event_type]
            if not targets:
                return
            writer.append(msg_id, event_type, now, body, targets)
            senders = self._start_senders()
        for url in targets:
            senders[url].wake()

    def start(self) -> None:
        """Start the senders now, e.g. to deliver what an earlier run left in the outbox."""
        if not self.endpoints:
            return
        with self._lock:
            self._open_writer()
            self._start_senders()

    def flush(self, timeout: float = 10.0) -> bool:
        """Start the senders and wait until nothing is pending; ``False`` on timeout.

        Messages given up on or cancelled do not count as pending.
        """
        if not self.endpoints:
            return True
        self.start()
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                pending = self._open_writer().pending(self._by_url)
            if not pending:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.02)

    def enable_endpoint(self, url: str) -> int:
        """Lift the disable a 410 Gone put on ``url``; returns the messages revived."""
        if url not in self._by_url:
            raise KeyError(f"webhooks: {url!r} is not a configured endpoint")
        with self._lock:
            revived = self._open_writer().enable(url)
            self._disabled.pop(url, None)
            self._routes = self._route()
            sender = self._senders.pop(url, None)
            if sender is not None:
                sender.halt()
                self._start_senders()
        return revived

    def failures(self) -> list[FailedDelivery]:
        """Messages given up on or cancelled, with the reason recorded for each."""
        with self._lock:
            return self._open_writer().failures()

    def counts(self) -> dict[str, int]:
        """Deliveries in the outbox per state (``pending``, ``failed``, ``cancelled``)."""
        with self._lock:
            return self._open_writer().counts()

    # -- hooks --------------------------------------------------------------------------

    def on_job_enqueued(self, job: Job) -> None:
        self._publish("dispatch.job.enqueued", lambda: {"job": job.to_dict()})

    def on_job_started(self, job: Job) -> None:
        self._publish("dispatch.job.started", lambda: {"job": job.to_dict()})

    def on_job_completed(self, job: Job, elapsed: dt.timedelta) -> None:
        self._publish(
            "dispatch.job.completed",
            lambda: {"job": job.to_dict(), "elapsed": elapsed.total_seconds()},
        )

    def on_job_failed(self, job: Job, error: BaseException) -> None:
        self._publish(
            "dispatch.job.failed", lambda: {"job": job.to_dict(), "error": error_data(error)}
        )

    def on_job_retrying(
        self, job: Job, error: BaseException, attempt: int, next_run_at: dt.datetime
    ) -> None:
        self._publish(
            "dispatch.job.retrying",
            lambda: {
                "job": job.to_dict(),
                "error": error_data(error),
                "attempt": attempt,
                "next_run_at": next_run_at.isoformat() if next_run_at is not None else None,
            },
        )

    def on_job_dlq(self, job: Job, error: BaseException) -> None:
        self._publish(
            "dispatch.job.dlq", lambda: {"job": job.to_dict(), "error": error_data(error)}
        )

    def on_workflow_started(self, run: WorkflowRun) -> None:
        self._publish("dispatch.workflow.started", lambda: {"run": run.to_dict()})

    def on_workflow_step_completed(
        self, run: WorkflowRun, step: str, elapsed: dt.timedelta
    ) -> None:
        self._publish(
            "dispatch.workflow.step_completed",
            lambda: {"run": run.to_dict(), "step": step, "elapsed": elapsed.total_seconds()},
        )

    def on_workflow_step_failed(self, run: WorkflowRun, step: str, error: BaseException) -> None:
        self._publish(
            "dispatch.workflow.step_failed",
            lambda: {"run": run.to_dict(), "step": step, "error": error_data(error)},
        )

    def on_workflow_completed(self, run: WorkflowRun, elapsed: dt.timedelta) -> None:
        self._publish(
            "dispatch.workflow.completed",
            lambda: {"run": run.to_dict(), "elapsed": elapsed.total_seconds()},
        )

    def on_workflow_failed(self, run: WorkflowRun, error: BaseException) -> None:
        self._publish(
            "dispatch.workflow.failed", lambda: {"run": run.to_dict(), "error": error_data(error)}
        )

    def on_cron_fired(self, entry: CronEntry, job: Job) -> None:
        self._publish(
            "dispatch.cron.fired", lambda: {"entry": entry.to_dict(), "job": job.to_dict()}
        )

    def on_shutdown(self) -> None:
        """Keep delivering up to ``shutdown_timeout``, then stop the senders."""
        if not self.endpoints:
            return
        with self._lock:
            senders = list(self._senders.values())
            # Nothing was sent in this run, but an earlier one may have left messages.
            leftovers = not senders and self.outbox_path.exists()
            if leftovers and self._open_writer().pending(self._by_url):
                senders = list(self._start_senders().values())
            self._senders = {}
        deadline = time.time() + self.shutdown_timeout
        for sender in senders:
            sender.drain(deadline)
        for sender in senders:
            sender.join(max(0.0, deadline - time.time()))
        for sender in senders:
            sender.halt()
        with self._lock:
            if self._writer is not None:
                left = self._writer.pending(self._by_url)
                self._writer.close()
                self._writer = None
                if left:
                    logger.info(
                        "webhooks: %d message(s) still pending at shutdown; they go out after "
                        "the next start",
                        left,
                    )


def _reset_after_fork() -> None:
    # A forked child has none of the parent's threads and must not use its connections.
    for extension in list(_INSTANCES):
        extension._reset()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)
