"""A real OpenTelemetry SDK provider with an in-memory reader, and a way to read it."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader


@dataclass
class Point:
    """One data point: its attributes and its value (counters) or count and sum."""

    attributes: dict[str, Any]
    value: float = 0.0
    count: int = 0
    sum: float = 0.0


@dataclass
class Readings:
    """What an in-memory reader collected, by instrument name."""

    points: dict[str, list[Point]] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)

    def total(self, name: str, attributes: Mapping[str, Any] | None = None) -> float:
        """Sum of a counter's points whose attributes include ``attributes``."""
        wanted = dict(attributes or {})
        return sum(
            p.value
            for p in self.points.get(name, [])
            if all(p.attributes.get(k) == v for k, v in wanted.items())
        )

    def count(self, name: str, attributes: Mapping[str, Any] | None = None) -> int:
        """Measurements a histogram holds, over the points matching ``attributes``."""
        wanted = dict(attributes or {})
        return sum(
            p.count
            for p in self.points.get(name, [])
            if all(p.attributes.get(k) == v for k, v in wanted.items())
        )


def read(reader: InMemoryMetricReader) -> Readings:
    found = Readings()
    data = reader.get_metrics_data()
    if data is None:
        return found
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found.units[metric.name] = metric.unit or ""
                points = found.points.setdefault(metric.name, [])
                for point in metric.data.data_points:
                    attributes = dict(point.attributes or {})
                    if hasattr(point, "count"):
                        points.append(Point(attributes, count=point.count, sum=point.sum))
                    else:
                        points.append(Point(attributes, value=point.value))
    return found


@dataclass
class Sdk:
    """An SDK ``MeterProvider`` of one test, with its in-memory reader."""

    provider: MeterProvider
    reader: InMemoryMetricReader

    def read(self) -> Readings:
        return read(self.reader)


@pytest.fixture
def sdk() -> Iterator[Sdk]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    try:
        yield Sdk(provider, reader)
    finally:
        provider.shutdown()
