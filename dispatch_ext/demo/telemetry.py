"""OpenTelemetry for the demo: an SDK meter provider read in memory, and its figures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["MetricRow", "MetricsSink", "start_metrics"]


@dataclass(frozen=True)
class MetricRow:
    """One instrument's total over all its attribute sets."""

    name: str
    kind: str  # "counter" or "histogram"
    unit: str
    value: float  # the sum of a counter; the number of observations of a histogram
    total: float | None = None  # a histogram's sum
    series: int = 1  # attribute sets (job names, queues, ...) seen


class MetricsSink:
    """An SDK ``MeterProvider`` with an ``InMemoryMetricReader`` attached."""

    def __init__(self, provider: Any, reader: Any) -> None:
        self.provider = provider
        self.reader = reader

    def rows(self, prefix: str = "") -> list[MetricRow]:
        """Every metric collected so far whose name starts with ``prefix``, sorted by name."""
        from opentelemetry.sdk.metrics.export import Histogram, Sum

        data = self.reader.get_metrics_data()
        found: dict[str, MetricRow] = {}
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    if not metric.name.startswith(prefix):
                        continue
                    points = list(metric.data.data_points)
                    if isinstance(metric.data, Histogram):
                        row = MetricRow(
                            metric.name,
                            "histogram",
                            metric.unit or "",
                            float(sum(p.count for p in points)),
                            float(sum(p.sum for p in points)),
                            len(points),
                        )
                    elif isinstance(metric.data, Sum):
                        row = MetricRow(
                            metric.name,
                            "counter",
                            metric.unit or "",
                            float(sum(p.value for p in points)),
                            None,
                            len(points),
                        )
                    else:
                        row = MetricRow(
                            metric.name,
                            type(metric.data).__name__.lower(),
                            metric.unit or "",
                            float(len(points)),
                            None,
                            len(points),
                        )
                    found[metric.name] = row
        return [found[name] for name in sorted(found)]

    def shutdown(self) -> None:
        self.provider.shutdown()


def start_metrics() -> MetricsSink | None:
    """Build an SDK meter provider with an in-memory reader; ``None`` without the SDK.

    The provider reaches the metrics extension through its settings, so nothing global is
    set.
    """
    try:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    except ImportError:
        return None

    reader = InMemoryMetricReader()
    return MetricsSink(MeterProvider(metric_readers=[reader]), reader)
