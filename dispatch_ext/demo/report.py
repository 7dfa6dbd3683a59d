"""The demo's closing report: events per hook and extension, audit log, metrics, webhooks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

from ..hookspecs import HOOK_NAMES
from ..registry import HookStats
from .console import Console, table
from .receiver import WebhookReceiver
from .telemetry import MetricRow

__all__ = ["count_lines", "print_events", "print_metrics", "print_webhooks"]


def print_events(
    console: Console, stats: Mapping[str, Mapping[str, HookStats]], names: Sequence[str]
) -> None:
    """One row per hook, one column per extension: how many times each was called."""
    console.heading("Events per hook and extension (calls)")
    rows: list[list[object]] = []
    for hook in HOOK_NAMES:
        cells: list[object] = [hook]
        for name in names:
            found = stats.get(name, {}).get(hook)
            cells.append("-" if found is None else found.calls)
        rows.append(cells)
    totals: list[object] = ["total"]
    for name in names:
        totals.append(sum(s.calls for s in stats.get(name, {}).values()))
    rows.append(totals)
    console.echo(table(["hook", *names], rows))
    console.note("  '-': the extension does not implement that hook.")
    for name in names:
        for hook, found in stats.get(name, {}).items():
            if found.errors:
                console.error(
                    f"  {name}.{hook}: {found.errors} of {found.calls} calls failed"
                    f" ({found.timeouts} timed out); see the log lines above"
                )


def count_lines(path: Path) -> int:
    try:
        with path.open("rb") as file:
            return sum(1 for _ in file)
    except OSError:
        return 0


def print_metrics(console: Console, rows: Sequence[MetricRow]) -> None:
    """Counters with their totals, histograms with count, sum and mean."""
    console.heading("Metrics (OpenTelemetry SDK, in-memory reader)")
    cells: list[list[object]] = []
    for row in rows:
        if row.kind == "histogram" and row.total is not None:
            mean = row.total / row.value if row.value else 0.0
            value = (
                f"{row.value:.0f} obs, sum {row.total:.3f} {row.unit}, mean {mean:.4f} {row.unit}"
            )
        else:
            value = f"{row.value:g} {row.unit}".rstrip()
        cells.append([row.name, row.kind, row.series, value])
    console.echo(table(["instrument", "kind", "series", "value"], cells, align="llrl"))


def print_webhooks(console: Console, receiver: WebhookReceiver, expected: int) -> None:
    """How many events arrived, how many verified, and of which types."""
    console.heading("Webhooks (Standard Webhooks signatures)")
    delivered, verified = len(receiver.delivered), len(receiver.verified)
    console.echo(
        f"  delivered {delivered} of {expected} events to {receiver.url}"
        f" ({receiver.requests} requests)"
    )
    console.echo(
        f"  verified  {verified} of {delivered} with {receiver.verified_with}",
        fg="green" if verified == delivered and delivered else "red",
    )
    for msg_id, why in sorted(receiver.rejected.items())[:5]:
        console.error(f"  rejected {msg_id}: {why}")
    if receiver.types:
        rows = [[kind, count] for kind, count in sorted(receiver.types.items())]
        console.echo(table(["event type", "delivered"], rows))
