"""The Dramatiq bridge: dispatch-ext extensions hear the lifecycle of Dramatiq messages.

::

    import dramatiq
    from dramatiq.brokers.redis import RedisBroker
    from dispatch_ext.bridges.dramatiq import install

    broker = RedisBroker(url="redis://127.0.0.1:6379/0")
    install(broker)
    dramatiq.set_broker(broker)

:func:`install` adds a :class:`DispatchMiddleware` placed before ``Retries``, so that its
"after" hooks (which Dramatiq runs in reverse order) see what ``Retries`` decided. Each
worker process discovers extensions when it boots (``after_process_boot``); a producer
does on its first enqueue.

How the hooks map onto Dramatiq (the documentation page has the full table):

- enqueued: ``after_enqueue`` of a message that is not a retry. A delayed message is put
  twice (on ``<queue>.DQ`` by the producer, on ``<queue>`` by the worker when it is due):
  the worker marks it in ``before_delay_message`` and skips the second put;
- started / completed: ``before_process_message`` / ``after_process_message``;
- retrying: ``after_process_message`` with an exception after ``Retries`` re-enqueued the
  message on ``<queue>.DQ`` (its ``eta`` is the next run time);
- failed, then dlq: ``after_nack``, the message was moved to ``<queue>.XQ``; a failure
  that is acknowledged instead (no ``Retries`` middleware) is failed without dlq;
- shutdown: ``after_worker_shutdown``, in each worker process.
"""

from __future__ import annotations

import datetime as dt
import functools
import threading
import time
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from dramatiq.common import dq_name, q_name
from dramatiq.middleware import Middleware, Retries

from ..models import Job, JobState
from ..registry import Registry
from ._common import (
    UNLIMITED_RETRIES,
    Once,
    ProcessRegistry,
    Timers,
    from_millis,
    guarded,
    job_snapshot,
    renew_lock_after_fork,
    utc_now,
)

__all__ = ["DispatchMiddleware", "MessageRejected", "install"]

_guarded = guarded("dramatiq")


class MessageRejected(Exception):
    """A message failed without an exception of its own (e.g. a middleware failed it)."""


def install(
    broker: Any,
    *,
    registry: Registry | None = None,
    extensions: Iterable[object] = (),
    autoload: bool = True,
    config: Any = None,
) -> DispatchMiddleware:
    """Make dispatch-ext extensions hear the messages of the Dramatiq ``broker``.

    Call it where the broker is defined, before actors are declared, so that workers and
    producers both run it. Installing twice on one broker returns the first middleware.

    Args:
        broker: The :class:`dramatiq.Broker`.
        registry: Use this registry in every process instead of building one per process.
        extensions: Extension objects to register in addition to the discovered ones.
        autoload: Discover installed extensions (entry points ``dispatch.extensions``).
        config: A :class:`dispatch_ext.config.Config` for discovery; ``None`` reads
            ``dispatch.toml`` / ``DISPATCH_CONFIG`` and the environment switches.
    """
    for middleware in broker.middleware:
        if isinstance(middleware, DispatchMiddleware):
            return middleware
    middleware = DispatchMiddleware(
        ProcessRegistry(
            registry=registry,
            extensions=extensions,
            autoload=autoload,
            config=config,
            engine="dramatiq",
        )
    )
    if any(isinstance(m, Retries) for m in broker.middleware):
        broker.add_middleware(middleware, before=Retries)
    else:
        broker.add_middleware(middleware)
    return middleware


class DispatchMiddleware(Middleware):
    """Emits dispatch-ext hooks from Dramatiq's middleware hooks; see :func:`install`."""

    def __init__(self, processes: ProcessRegistry) -> None:
        self.processes = processes
        self.timers = Timers()
        self._delayed = Once()  # ids taken off a delay queue: their next put is no enqueue
        self._lock = threading.Lock()
        renew_lock_after_fork(self)
        self._retry_etas: dict[str, int] = {}  # message id -> eta of the retry just enqueued
        self._failures: dict[str, BaseException] = {}  # message id -> error, until nacked

    @property
    def registry(self) -> Registry:
        """The registry of the current process (built on first use)."""
        return self.processes.get()

    # -- process life -------------------------------------------------------------------

    @_guarded
    def after_process_boot(self, broker: Any) -> None:
        self.processes.get()

    @_guarded
    def before_worker_boot(self, broker: Any, worker: Any) -> None:
        self.processes.get()

    @_guarded
    def after_worker_shutdown(self, broker: Any, worker: Any) -> None:
        self.processes.shutdown()

    # -- producer side ------------------------------------------------------------------

    @_guarded
    def before_delay_message(self, broker: Any, message: Any) -> None:
        self._delayed.add(message.message_id)

    @_guarded
    def after_enqueue(self, broker: Any, message: Any, delay: Any) -> None:
        message_id = message.message_id
        retries = message.options.get("retries") or 0
        if message.queue_name == dq_name(message.queue_name):
            if retries:
                # Retries re-enqueued the message being processed on this thread: the
                # retrying event is emitted from after_process_message, with its error.
                with self._lock:
                    eta = message.options.get("eta") or int(time.time() * 1000)
                    self._retry_etas[message_id] = eta
                    _trim(self._retry_etas)
                return
        elif self._delayed.pop(message_id) or retries:
            return  # a due delayed message (or a retry) moved to its queue: no new enqueue
        self.processes.emit(
            "on_job_enqueued",
            lambda: {
                "job": self._job(
                    broker,
                    message,
                    JobState.PENDING,
                    created_at=from_millis(message.message_timestamp),
                    run_at=from_millis(message.options.get("eta")),
                )
            },
        )

    # -- worker side --------------------------------------------------------------------

    @_guarded
    def before_process_message(self, broker: Any, message: Any) -> None:
        with self._lock:  # an eta noted for this id belongs to an earlier attempt
            self._retry_etas.pop(message.message_id, None)
        if message.failed:
            return  # rejected before running (e.g. an age limit): it never starts
        started_at = self.timers.start(message.message_id)
        self.processes.emit(
            "on_job_started",
            lambda: {"job": self._job(broker, message, JobState.RUNNING, started_at=started_at)},
        )

    @_guarded
    def after_process_message(
        self, broker: Any, message: Any, *, result: Any = None, exception: Any = None
    ) -> None:
        message_id = message.message_id
        elapsed, started_at = self.timers.stop(message_id)
        with self._lock:
            eta = self._retry_etas.pop(message_id, None)
        if message.failed:
            # Retries gave up (or a middleware failed it): reported once nacked.
            error = exception if isinstance(exception, BaseException) else None
            self._remember_failure(message_id, error or _rejected(message))
            return
        now = utc_now()
        if exception is None:
            self.processes.emit(
                "on_job_completed",
                lambda: {
                    "job": self._job(
                        broker,
                        message,
                        JobState.COMPLETED,
                        started_at=started_at,
                        completed_at=now,
                    ),
                    "elapsed": elapsed or dt.timedelta(0),
                },
            )
            return
        error = exception if isinstance(exception, BaseException) else _rejected(message)
        if eta is not None:
            attempt = int(message.options.get("retries") or 1)
            next_run_at = from_millis(eta) or now
            self.processes.emit(
                "on_job_retrying",
                lambda: {
                    "job": self._job(
                        broker,
                        message,
                        JobState.RETRYING,
                        retry_count=attempt,
                        last_error=_describe(error),
                        run_at=next_run_at,
                        started_at=started_at,
                    ),
                    "error": error,
                    "attempt": attempt,
                    "next_run_at": next_run_at,
                },
            )
            return
        # Failed, not retried and acknowledged (no Retries middleware): terminal, no DLQ.
        self.processes.emit(
            "on_job_failed",
            lambda: {
                "job": self._job(
                    broker,
                    message,
                    JobState.FAILED,
                    last_error=_describe(error),
                    started_at=started_at,
                    completed_at=now,
                ),
                "error": error,
            },
        )

    @_guarded
    def after_skip_message(self, broker: Any, message: Any) -> None:
        self.timers.stop(message.message_id)
        if message.failed:
            self._remember_failure(message.message_id, _rejected(message))

    @_guarded
    def after_nack(self, broker: Any, message: Any) -> None:
        """The message was moved to its dead-letter queue: failed, then dlq."""
        with self._lock:
            error = self._failures.pop(message.message_id, None)
        if error is None:
            error = _rejected(message)
        now = utc_now()
        job = functools.cache(
            lambda: self._job(
                broker,
                message,
                JobState.FAILED,
                last_error=_describe(error),
                completed_at=now,
            )
        )
        self.processes.emit("on_job_failed", lambda: {"job": job(), "error": error})
        self.processes.emit(
            "on_job_dlq",
            lambda: {
                "job": replace(job(), state=JobState.DEAD),
                "error": error,
            },
        )

    # -- reading Dramatiq's data --------------------------------------------------------

    def _remember_failure(self, message_id: str, error: BaseException) -> None:
        with self._lock:
            self._failures[message_id] = error
            _trim(self._failures)

    def _job(self, broker: Any, message: Any, state: JobState, **fields: Any) -> Job:
        options = message.options
        try:
            actor = broker.get_actor(message.actor_name)
        except Exception:
            actor = None
        actor_options = getattr(actor, "options", {}) or {}
        time_limit = options.get("time_limit", actor_options.get("time_limit"))
        values: dict[str, Any] = {
            "priority": int(getattr(actor, "priority", 0) or 0),
            "max_retries": _max_retries(broker, options, actor_options),
            "retry_count": int(options.get("retries") or 0),
            "created_at": from_millis(message.message_timestamp),
            "timeout": time_limit / 1000 if isinstance(time_limit, (int, float)) else None,
        }
        values.update(fields)
        return job_snapshot(
            id=str(message.message_id),
            name=str(message.actor_name),
            queue=q_name(message.queue_name),
            args=message.args,
            kwargs=message.kwargs,
            state=state,
            **values,
        )


def _max_retries(broker: Any, options: Any, actor_options: Any) -> int:
    default = next(
        (m.max_retries for m in broker.middleware if isinstance(m, Retries)),
        0,
    )
    value = options.get("max_retries", actor_options.get("max_retries", default))
    return UNLIMITED_RETRIES if value is None else int(value)


def _trim(pending: dict[str, Any], size: int = 10_000) -> None:
    """Drop the oldest entries of a per-message dict that outgrew ``size``."""
    while len(pending) > size:
        pending.pop(next(iter(pending)))


def _rejected(message: Any) -> BaseException:
    stuffed = getattr(message, "_exception", None)
    if isinstance(stuffed, BaseException):
        return stuffed
    return MessageRejected(
        f"message {message.message_id} of actor {message.actor_name!r} failed without an "
        "exception (a middleware rejected it before or after it ran)"
    )


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"
