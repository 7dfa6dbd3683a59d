"""The instruments the metrics extension reports, and how they are created.

Every instrument is created once, when the extension is built; the hooks only call
``add``/``record`` on them.
"""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.metrics import Counter, Histogram, Meter

__all__ = ["COUNTERS", "HISTOGRAMS", "InstrumentSpec", "Instruments"]


@dataclass(frozen=True)
class InstrumentSpec:
    """Name, unit and description of one instrument."""

    name: str
    unit: str
    description: str


COUNTERS: dict[str, InstrumentSpec] = {
    "on_job_enqueued": InstrumentSpec(
        "dispatch.job.enqueued", "{job}", "Jobs stored and accepted into their queue."
    ),
    "on_job_started": InstrumentSpec(
        "dispatch.job.started", "{job}", "Jobs a worker claimed and started to run."
    ),
    "on_job_completed": InstrumentSpec(
        "dispatch.job.completed", "{job}", "Jobs whose handler returned."
    ),
    "on_job_failed": InstrumentSpec(
        "dispatch.job.failed", "{job}", "Jobs that failed with no retry left (terminal)."
    ),
    "on_job_retrying": InstrumentSpec(
        "dispatch.job.retrying", "{job}", "Failed attempts for which a retry was scheduled."
    ),
    "on_job_dlq": InstrumentSpec(
        "dispatch.job.dlq", "{job}", "Jobs moved to the dead-letter queue."
    ),
    "on_workflow_started": InstrumentSpec(
        "dispatch.workflow.started", "{run}", "Workflow runs that began."
    ),
    "on_workflow_step_completed": InstrumentSpec(
        "dispatch.workflow.step_completed", "{step}", "Workflow steps that finished."
    ),
    "on_workflow_step_failed": InstrumentSpec(
        "dispatch.workflow.step_failed", "{step}", "Workflow steps that raised."
    ),
    "on_workflow_completed": InstrumentSpec(
        "dispatch.workflow.completed", "{run}", "Workflow runs that finished successfully."
    ),
    "on_workflow_failed": InstrumentSpec(
        "dispatch.workflow.failed", "{run}", "Workflow runs that failed terminally."
    ),
    "on_cron_fired": InstrumentSpec(
        "dispatch.cron.fired", "{fire}", "Cron entries that fired and enqueued their job."
    ),
}
"""One counter per lifecycle hook, keyed by the hook's name."""

SENT_MESSAGES = InstrumentSpec(
    "messaging.client.sent.messages",
    "{message}",
    "Jobs sent to a queue (OpenTelemetry messaging convention; counts enqueued jobs).",
)
CONSUMED_MESSAGES = InstrumentSpec(
    "messaging.client.consumed.messages",
    "{message}",
    "Jobs a worker received (OpenTelemetry messaging convention; counts started jobs).",
)
PROCESS_DURATION = InstrumentSpec(
    "messaging.process.duration",
    "s",
    "Time a job's handler ran, per attempt; failed attempts carry error.type.",
)
STEP_DURATION = InstrumentSpec(
    "dispatch.workflow.step.duration", "s", "Time a workflow step ran until it finished."
)
WORKFLOW_DURATION = InstrumentSpec(
    "dispatch.workflow.duration",
    "s",
    "Time from the start of a workflow run to its end; failed runs carry error.type.",
)

HISTOGRAMS: tuple[InstrumentSpec, ...] = (PROCESS_DURATION, STEP_DURATION, WORKFLOW_DURATION)
"""The duration histograms, all in seconds."""

# Bucket boundaries the messaging conventions recommend for messaging.process.duration.
JOB_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
# Workflows span seconds to hours.
WORKFLOW_BUCKETS = (0.01, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)


class Instruments:
    """Every instrument of the extension, created once from one meter."""

    __slots__ = (
        "consumed",
        "counters",
        "process_duration",
        "sent",
        "step_duration",
        "workflow_duration",
    )

    def __init__(self, meter: Meter) -> None:
        self.counters: dict[str, Counter] = {
            hook: meter.create_counter(spec.name, spec.unit, spec.description)
            for hook, spec in COUNTERS.items()
        }
        self.sent = _counter(meter, SENT_MESSAGES)
        self.consumed = _counter(meter, CONSUMED_MESSAGES)
        self.process_duration = _histogram(meter, PROCESS_DURATION, JOB_BUCKETS)
        self.step_duration = _histogram(meter, STEP_DURATION, JOB_BUCKETS)
        self.workflow_duration = _histogram(meter, WORKFLOW_DURATION, WORKFLOW_BUCKETS)


def _counter(meter: Meter, spec: InstrumentSpec) -> Counter:
    return meter.create_counter(spec.name, spec.unit, spec.description)


def _histogram(meter: Meter, spec: InstrumentSpec, buckets: tuple[float, ...]) -> Histogram:
    return meter.create_histogram(
        spec.name, spec.unit, spec.description, explicit_bucket_boundaries_advisory=buckets
    )
