"""The metrics extension, driven through a real registry into a real SDK provider."""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from dispatch_ext_metrics import COUNTERS, MetricsExtension
from opentelemetry.metrics import Meter, MeterProvider
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)

from dispatch_ext import HOOK_NAMES, CronEntry, Job, JobState, Registry, RunState, WorkflowRun
from dispatch_ext.testing import assert_valid_extension

UTC = dt.timezone.utc
JOB = Job(id="j1", name="send_email", queue="mail", state=JobState.RUNNING)
RUN = WorkflowRun(id="r1", name="onboard")
ENTRY = CronEntry(name="nightly", schedule="0 3 * * *", job_name="report")
CRON_JOB = Job(id="j2", name="report", queue="reports")


class PaymentDeclined(Exception):
    pass


ERROR_TYPE = f"{__name__}.PaymentDeclined"

# hook -> (kwargs, the attributes its counter must carry)
CASES: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "on_job_enqueued": (
        {"job": JOB},
        {"messaging.destination.name": "mail", "dispatch.job.name": "send_email"},
    ),
    "on_job_started": (
        {"job": JOB},
        {"messaging.destination.name": "mail", "dispatch.job.name": "send_email"},
    ),
    "on_job_completed": (
        {"job": JOB, "elapsed": dt.timedelta(seconds=0.25)},
        {"messaging.destination.name": "mail", "dispatch.job.name": "send_email"},
    ),
    "on_job_failed": (
        {"job": JOB, "error": PaymentDeclined("no")},
        {"dispatch.job.name": "send_email", "error.type": ERROR_TYPE},
    ),
    "on_job_retrying": (
        {
            "job": JOB,
            "error": TimeoutError("slow"),
            "attempt": 1,
            "next_run_at": dt.datetime(2025, 1, 1, tzinfo=UTC),
        },
        {"dispatch.job.name": "send_email", "error.type": "TimeoutError"},
    ),
    "on_job_dlq": (
        {"job": JOB, "error": PaymentDeclined("no")},
        {"messaging.destination.name": "mail", "error.type": ERROR_TYPE},
    ),
    "on_workflow_started": ({"run": RUN}, {"dispatch.workflow.name": "onboard"}),
    "on_workflow_step_completed": (
        {"run": RUN, "step": "welcome", "elapsed": dt.timedelta(seconds=1)},
        {"dispatch.workflow.name": "onboard", "dispatch.workflow.step": "welcome"},
    ),
    "on_workflow_step_failed": (
        {"run": RUN, "step": "charge", "error": KeyError("card")},
        {
            "dispatch.workflow.name": "onboard",
            "dispatch.workflow.step": "charge",
            "error.type": "KeyError",
        },
    ),
    "on_workflow_completed": (
        {"run": RUN, "elapsed": dt.timedelta(seconds=3)},
        {"dispatch.workflow.name": "onboard"},
    ),
    "on_workflow_failed": (
        {"run": RUN, "error": PaymentDeclined("no")},
        {"dispatch.workflow.name": "onboard", "error.type": ERROR_TYPE},
    ),
    "on_cron_fired": (
        {"entry": ENTRY, "job": CRON_JOB},
        {"dispatch.cron.entry": "nightly", "dispatch.job.name": "report"},
    ),
}


def test_it_is_a_valid_extension_for_every_hook_but_none_unknown() -> None:
    ext = MetricsExtension()
    assert_valid_extension(ext)
    registry = Registry()
    registry.register(ext)
    assert registry.hooks_of("metrics") == list(HOOK_NAMES)


@pytest.mark.parametrize("hook", list(CASES))
def test_each_hook_adds_one_to_its_counter_with_its_attributes(sdk: Any, hook: str) -> None:
    registry = Registry(strict=True)
    registry.register(MetricsExtension(meter_provider=sdk.provider))
    kwargs, attributes = CASES[hook]
    registry.emit(hook, **kwargs)
    registry.emit(hook, **kwargs)
    readings = sdk.read()
    spec = COUNTERS[hook]
    assert readings.total(spec.name, attributes) == 2
    assert readings.units[spec.name] == spec.unit
    for other, other_spec in COUNTERS.items():
        if other != hook:
            assert readings.total(other_spec.name) == 0, other


def test_every_lifecycle_hook_has_a_counter() -> None:
    assert set(COUNTERS) == set(HOOK_NAMES) - {"on_shutdown"}
    assert [spec.name for spec in COUNTERS.values()] == [
        "dispatch.job.enqueued",
        "dispatch.job.started",
        "dispatch.job.completed",
        "dispatch.job.failed",
        "dispatch.job.retrying",
        "dispatch.job.dlq",
        "dispatch.workflow.started",
        "dispatch.workflow.step_completed",
        "dispatch.workflow.step_failed",
        "dispatch.workflow.completed",
        "dispatch.workflow.failed",
        "dispatch.cron.fired",
    ]


def test_messaging_conventions_count_sent_and_received_jobs(sdk: Any) -> None:
    registry = Registry(strict=True)
    registry.register(MetricsExtension(meter_provider=sdk.provider, messaging_system="myapp"))
    for _ in range(3):
        registry.emit("on_job_enqueued", job=JOB)
    registry.emit("on_job_started", job=JOB)
    readings = sdk.read()
    common = {
        "messaging.system": "myapp",
        "messaging.destination.name": "mail",
        "dispatch.job.name": "send_email",
    }
    sent = {**common, "messaging.operation.name": "send"}
    received = {**common, "messaging.operation.name": "receive"}
    assert readings.total("messaging.client.sent.messages", sent) == 3
    assert readings.total("messaging.client.consumed.messages", received) == 1


def test_job_durations_come_from_elapsed_and_failed_attempts_from_the_start(sdk: Any) -> None:
    registry = Registry(strict=True)
    registry.register(MetricsExtension(meter_provider=sdk.provider))
    registry.emit("on_job_completed", job=JOB, elapsed=dt.timedelta(milliseconds=250))
    registry.emit("on_job_completed", job=JOB, elapsed=dt.timedelta(milliseconds=750))
    started = dt.datetime.now(UTC) - dt.timedelta(seconds=2)
    failing = Job(id="j3", name="charge", queue="billing", started_at=started)
    registry.emit("on_job_failed", job=failing, error=PaymentDeclined("no"))
    unstarted = Job(id="j4", name="charge", queue="billing")
    registry.emit("on_job_dlq", job=unstarted, error=PaymentDeclined("no"))
    registry.emit("on_job_failed", job=unstarted, error=PaymentDeclined("no"))  # no start: untimed
    readings = sdk.read()
    ok = {"dispatch.job.name": "send_email", "messaging.operation.name": "process"}
    points = [
        p for p in readings.points["messaging.process.duration"] if "error.type" not in p.attributes
    ]
    assert [(p.count, p.sum) for p in points] == [(2, pytest.approx(1.0))]
    assert readings.count("messaging.process.duration", ok) == 2
    failed = [
        p for p in readings.points["messaging.process.duration"] if "error.type" in p.attributes
    ]
    assert len(failed) == 1
    assert failed[0].attributes["error.type"] == ERROR_TYPE
    assert failed[0].attributes["messaging.destination.name"] == "billing"
    assert failed[0].count == 1
    assert failed[0].sum >= 2.0
    assert readings.units["messaging.process.duration"] == "s"


def test_workflow_and_step_durations(sdk: Any) -> None:
    registry = Registry(strict=True)
    registry.register(MetricsExtension(meter_provider=sdk.provider))
    registry.emit(
        "on_workflow_step_completed", run=RUN, step="a", elapsed=dt.timedelta(seconds=1.5)
    )
    registry.emit("on_workflow_completed", run=RUN, elapsed=dt.timedelta(seconds=4))
    began = WorkflowRun(
        id="r2",
        name="onboard",
        state=RunState.FAILED,
        started_at=dt.datetime.now(UTC) - dt.timedelta(seconds=3),
    )
    registry.emit("on_workflow_failed", run=began, error=KeyError("x"))
    readings = sdk.read()
    assert readings.count("dispatch.workflow.step.duration") == 1
    assert readings.count("dispatch.workflow.duration") == 2
    assert readings.count("dispatch.workflow.duration", {"error.type": "KeyError"}) == 1
    completed = [
        p for p in readings.points["dispatch.workflow.duration"] if "error.type" not in p.attributes
    ]
    assert completed[0].sum == pytest.approx(4.0)
    assert readings.units["dispatch.workflow.duration"] == "s"


class CountingMeter:
    """A real SDK meter that counts instruments created and keeps what each add/record got."""

    def __init__(self, meter: Meter) -> None:
        self._meter = meter
        self.created = 0
        self.calls: list[tuple[str, Any]] = []

    def _wrap(self, kind: str, instrument: Any) -> Any:
        calls = self.calls

        class Spy:
            def add(self, amount: float, attributes: Any = None) -> None:
                calls.append((kind, attributes))
                instrument.add(amount, attributes)

            def record(self, amount: float, attributes: Any = None) -> None:
                calls.append((kind, attributes))
                instrument.record(amount, attributes)

        return Spy()

    def create_counter(self, *args: Any, **kwargs: Any) -> Any:
        self.created += 1
        return self._wrap("counter", self._meter.create_counter(*args, **kwargs))

    def create_histogram(self, *args: Any, **kwargs: Any) -> Any:
        self.created += 1
        return self._wrap("histogram", self._meter.create_histogram(*args, **kwargs))


class CountingProvider(MeterProvider):
    def __init__(self, provider: SdkMeterProvider) -> None:
        self.provider = provider
        self.meters: list[CountingMeter] = []

    def get_meter(self, name: str, *args: Any, **kwargs: Any) -> Any:
        meter = CountingMeter(self.provider.get_meter(name, *args, **kwargs))
        self.meters.append(meter)
        return meter


def test_instruments_are_created_once_and_attribute_sets_are_reused(
    sdk: Any, caplog: pytest.LogCaptureFixture
) -> None:
    provider = CountingProvider(sdk.provider)
    ext = MetricsExtension(meter_provider=provider)
    assert len(provider.meters) == 1
    meter = provider.meters[0]
    created = meter.created
    assert created == len(COUNTERS) + 5  # 12 counters, sent/consumed, three histograms
    registry = Registry(strict=True)
    registry.register(ext)
    caplog.set_level(logging.DEBUG)
    for _ in range(200):
        for hook, (kwargs, _) in CASES.items():
            registry.emit(hook, **kwargs)
    assert meter.created == created
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
    # Each round of events hands the very same attribute mappings to the instruments.
    per_round, rest = divmod(len(meter.calls), 200)
    assert rest == 0
    assert per_round >= len(CASES)
    first_round, second_round = meter.calls[:per_round], meter.calls[per_round : 2 * per_round]
    for (_, a), (_, b) in zip(first_round, second_round, strict=True):
        assert a is b
    assert sdk.read().total("dispatch.job.enqueued") == 200


def test_a_global_provider_set_after_the_extension_is_built_still_gets_the_figures() -> None:
    # The global provider can be set once per process: this runs in a fresh interpreter.
    script = textwrap.dedent(
        """
        from opentelemetry import metrics
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from dispatch_ext import Job, Registry
        from dispatch_ext_metrics import MetricsExtension

        ext = MetricsExtension()
        before = ext.status_detail
        reader = InMemoryMetricReader()
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
        registry = Registry(strict=True)
        registry.register(ext)
        for _ in range(4):
            registry.emit("on_job_enqueued", job=Job(id="1", name="a"))
        data = reader.get_metrics_data()
        values = [
            p.value
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for m in sm.metrics if m.name == "dispatch.job.enqueued"
            for p in m.data.data_points
        ]
        print(before)
        print(ext.status_detail)
        print(sum(values))
        """
    )
    done = subprocess.run(
        [sys.executable, "-W", "error", "-c", script], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    before, after, value = done.stdout.strip().splitlines()
    assert before.startswith("no MeterProvider set yet")
    assert after == "reporting to global MeterProvider"
    assert value == "4"


def test_status_detail_names_the_given_provider(sdk: Any) -> None:
    assert MetricsExtension(meter_provider=sdk.provider).status_detail == (
        "reporting to MeterProvider"
    )


class CollectingExporter(MetricExporter):
    """An SDK exporter that keeps the names of what it was asked to export."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        for resource in metrics_data.resource_metrics:
            for scope in resource.scope_metrics:
                self.names.extend(metric.name for metric in scope.metrics)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        pass


def test_shutdown_flushes_a_periodic_exporter() -> None:
    exporter = CollectingExporter()
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = SdkMeterProvider(metric_readers=[reader])
    try:
        registry = Registry(strict=True)
        registry.register(MetricsExtension(meter_provider=provider))
        registry.emit("on_job_enqueued", job=JOB)
        assert exporter.names == []
        registry.emit("on_shutdown")
        assert "dispatch.job.enqueued" in exporter.names
    finally:
        provider.shutdown()


def test_flush_on_shutdown_can_be_turned_off() -> None:
    exporter = CollectingExporter()
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = SdkMeterProvider(metric_readers=[reader])
    try:
        registry = Registry(strict=True)
        registry.register(MetricsExtension(meter_provider=provider, flush_on_shutdown=False))
        registry.emit("on_job_enqueued", job=JOB)
        registry.emit("on_shutdown")
        assert exporter.names == []
    finally:
        provider.shutdown()


def test_a_bad_setting_names_itself() -> None:
    with pytest.raises(ValueError, match=r"messaging_system"):
        MetricsExtension(messaging_system="")


def test_repr() -> None:
    assert repr(MetricsExtension()).startswith("MetricsExtension(meter_provider=global ")
