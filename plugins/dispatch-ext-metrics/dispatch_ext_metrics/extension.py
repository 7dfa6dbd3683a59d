"""The metrics extension: OpenTelemetry counters and duration histograms for every event."""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import TYPE_CHECKING

from opentelemetry import metrics

from ._attributes import AttributeCache, Attributes, error_type, seconds_since
from .instruments import Instruments

if TYPE_CHECKING:
    from dispatch_ext import CronEntry, Job, WorkflowRun

__all__ = ["MetricsExtension"]

logger = logging.getLogger("dispatch_ext_metrics")

METER_NAME = "dispatch_ext_metrics"
_VERSION = "0.1.0"
# Providers of the OpenTelemetry API that drop every measurement.
_NO_OP_PROVIDERS = frozenset({"NoOpMeterProvider", "_ProxyMeterProvider"})
# Start times of running jobs kept at most, to time failed attempts.
_RUNNING_LIMIT = 100_000


class MetricsExtension:
    """Counts job, workflow and cron events and times jobs and workflows.

    The instruments are created once, here, from ``meter_provider`` or else from the
    global provider of the OpenTelemetry API. When the application sets its global
    provider later, the API's proxy meter forwards to it, so building the extension
    before the application configures OpenTelemetry loses nothing.

    Args:
        meter_provider: The ``MeterProvider`` to report to; ``None`` uses the global one.
        messaging_system: Value of the ``messaging.system`` attribute on the
            OpenTelemetry messaging instruments.
        flush_on_shutdown: Call the provider's ``force_flush`` in ``on_shutdown``, so
            that a periodic exporter sends the last figures before the process exits.
        flush_timeout: Seconds that flush may take.
    """

    name = "metrics"

    def __init__(
        self,
        meter_provider: metrics.MeterProvider | None = None,
        *,
        messaging_system: str = "dispatch",
        flush_on_shutdown: bool = True,
        flush_timeout: float = 5.0,
    ) -> None:
        if not isinstance(messaging_system, str) or not messaging_system:
            raise ValueError(
                "metrics: messaging_system must be a non-empty string, "
                f"got {messaging_system!r}; fix [extensions.metrics] messaging_system"
            )
        self._provider = meter_provider
        self.flush_on_shutdown = bool(flush_on_shutdown)
        self.flush_timeout = float(flush_timeout)
        meter = metrics.get_meter(METER_NAME, _VERSION, meter_provider=meter_provider)
        self.instruments = Instruments(meter)
        self._attributes = AttributeCache(messaging_system)
        counters = self.instruments.counters
        self._enqueued = counters["on_job_enqueued"]
        self._started = counters["on_job_started"]
        self._completed = counters["on_job_completed"]
        self._failed = counters["on_job_failed"]
        self._retrying = counters["on_job_retrying"]
        self._dlq = counters["on_job_dlq"]
        self._wf_started = counters["on_workflow_started"]
        self._step_completed = counters["on_workflow_step_completed"]
        self._step_failed = counters["on_workflow_step_failed"]
        self._wf_completed = counters["on_workflow_completed"]
        self._wf_failed = counters["on_workflow_failed"]
        self._cron_fired = counters["on_cron_fired"]
        self._flush_warned = False
        self._running: dict[str, float] = {}

    def __repr__(self) -> str:
        return f"MetricsExtension(meter_provider={self._provider_label()})"

    @property
    def status_detail(self) -> str:
        """One line for ``dispatch-ext list``/``info``: where the figures go."""
        provider = self._current_provider()
        if type(provider).__name__ in _NO_OP_PROVIDERS:
            return (
                "no MeterProvider set yet: measurements are dropped until the application "
                "calls opentelemetry.metrics.set_meter_provider()"
            )
        return f"reporting to {self._provider_label()}"

    def _current_provider(self) -> metrics.MeterProvider:
        return self._provider if self._provider is not None else metrics.get_meter_provider()

    def _provider_label(self) -> str:
        if self._provider is None:
            return f"global {type(metrics.get_meter_provider()).__name__}"
        return type(self._provider).__name__

    # -- jobs -------------------------------------------------------------------------

    def on_job_enqueued(self, job: Job) -> None:
        attributes = self._attributes.job(job.name, job.queue)
        self._enqueued.add(1, attributes.base)
        self.instruments.sent.add(1, attributes.sent)

    def on_job_started(self, job: Job) -> None:
        attributes = self._attributes.job(job.name, job.queue)
        self._started.add(1, attributes.base)
        self.instruments.consumed.add(1, attributes.received)
        running = self._running
        if len(running) >= _RUNNING_LIMIT:  # ends never heard (e.g. bridged elsewhere)
            running.clear()
        running[job.id] = time.monotonic()

    def on_job_completed(self, job: Job, elapsed: dt.timedelta) -> None:
        self._running.pop(job.id, None)
        attributes = self._attributes.job(job.name, job.queue)
        self._completed.add(1, attributes.base)
        self.instruments.process_duration.record(elapsed.total_seconds(), attributes.processed)

    def on_job_failed(self, job: Job, error: BaseException) -> None:
        counted, timed = self._attributes.job(job.name, job.queue).failure(error_type(error))
        self._failed.add(1, counted)
        self._record_attempt(job, timed)

    def on_job_retrying(self, job: Job, error: BaseException) -> None:
        counted, timed = self._attributes.job(job.name, job.queue).failure(error_type(error))
        self._retrying.add(1, counted)
        self._record_attempt(job, timed)

    def on_job_dlq(self, job: Job, error: BaseException) -> None:
        counted, _ = self._attributes.job(job.name, job.queue).failure(error_type(error))
        self._dlq.add(1, counted)

    def _record_attempt(self, job: Job, attributes: Attributes) -> None:
        # A failed attempt has no elapsed argument: time it from the on_job_started heard
        # in this process, else from the snapshot's started_at.
        started = self._running.pop(job.id, None)
        if started is not None:
            seconds: float | None = time.monotonic() - started
        else:
            seconds = seconds_since(job.started_at)
        if seconds is not None:
            self.instruments.process_duration.record(seconds, attributes)

    # -- workflows --------------------------------------------------------------------

    def on_workflow_started(self, run: WorkflowRun) -> None:
        self._wf_started.add(1, self._attributes.workflow(run.name))

    def on_workflow_step_completed(
        self, run: WorkflowRun, step: str, elapsed: dt.timedelta
    ) -> None:
        attributes = self._attributes.step(run.name, step)
        self._step_completed.add(1, attributes)
        self.instruments.step_duration.record(elapsed.total_seconds(), attributes)

    def on_workflow_step_failed(self, run: WorkflowRun, step: str, error: BaseException) -> None:
        self._step_failed.add(1, self._attributes.step(run.name, step, error_type(error)))

    def on_workflow_completed(self, run: WorkflowRun, elapsed: dt.timedelta) -> None:
        attributes = self._attributes.workflow(run.name)
        self._wf_completed.add(1, attributes)
        self.instruments.workflow_duration.record(elapsed.total_seconds(), attributes)

    def on_workflow_failed(self, run: WorkflowRun, error: BaseException) -> None:
        attributes = self._attributes.workflow(run.name, error_type(error))
        self._wf_failed.add(1, attributes)
        seconds = seconds_since(run.started_at)
        if seconds is not None:
            self.instruments.workflow_duration.record(seconds, attributes)

    # -- cron and shutdown ------------------------------------------------------------

    def on_cron_fired(self, entry: CronEntry, job: Job) -> None:
        self._cron_fired.add(1, self._attributes.cron(entry.name, entry.job_name or job.name))

    def on_shutdown(self) -> None:
        if not self.flush_on_shutdown:
            return
        flush = getattr(self._current_provider(), "force_flush", None)
        if flush is None:
            return
        try:
            flush(timeout_millis=int(self.flush_timeout * 1000))
        except Exception as exc:  # the exporter's trouble must not end the shutdown
            if not self._flush_warned:
                self._flush_warned = True
                logger.warning(
                    "metrics: flushing the MeterProvider at shutdown failed: %s: %s",
                    type(exc).__name__,
                    exc,
                )
