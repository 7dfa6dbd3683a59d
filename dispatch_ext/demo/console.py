"""Writing the demo's output: one line per event while it runs, then plain tables."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import IO, Any

import click

from .counter import Event, compact

__all__ = ["Console", "table"]

_LABELS = {
    "on_job_enqueued": ("enqueued", None),
    "on_job_started": ("started", None),
    "on_job_completed": ("completed", "green"),
    "on_job_failed": ("failed", "red"),
    "on_job_retrying": ("retrying", "yellow"),
    "on_job_dlq": ("dead-lettered", "red"),
    "on_workflow_started": ("workflow started", "cyan"),
    "on_workflow_step_completed": ("step completed", "cyan"),
    "on_workflow_step_failed": ("step failed", "red"),
    "on_workflow_completed": ("workflow completed", "green"),
    "on_workflow_failed": ("workflow failed", "red"),
    "on_cron_fired": ("cron fired", "magenta"),
    "on_shutdown": ("shutdown", "blue"),
}

_SHOW_PAYLOAD = frozenset({"on_job_enqueued", "on_workflow_started"})


class Console:
    """Prints to a stream, with colours only when asked or when the stream is a terminal.

    Args:
        color: ``True``/``False`` to force colours on or off; ``None`` decides from the
            stream (a terminal gets colours, a pipe or a file does not).
        file: Where to write; standard output by default.
    """

    def __init__(self, color: bool | None = None, file: IO[str] | None = None) -> None:
        self.color = color
        self.file = file
        self._lock = threading.Lock()

    def echo(self, text: str = "", **style: Any) -> None:
        with self._lock:
            click.echo(
                click.style(text, **style) if style else text, file=self.file, color=self.color
            )

    def heading(self, text: str) -> None:
        self.echo()
        self.echo(text, bold=True)

    def note(self, text: str) -> None:
        self.echo(text, dim=True)

    def warn(self, text: str) -> None:
        self.echo(text, fg="yellow")

    def error(self, text: str) -> None:
        self.echo(text, fg="red", bold=True)

    def event(self, event: Event) -> None:
        """One line per event: time, what happened, to which job or run, and the detail.

        The payload is shown where a job or run begins; later lines carry the same short
        id (the end of the full one) instead.
        """
        label, color = _LABELS.get(event.hook, (event.hook, None))
        ident = f"#{event.id[-6:]}" if event.kind in ("job", "workflow") else ""
        shown = event.detail
        if event.hook in _SHOW_PAYLOAD:
            shown = "  ".join(p for p in (compact(event.payload, 80), event.detail) if p)
        cells = [
            click.style(f"{event.at:6.2f}s", dim=True),
            click.style(f"{label:<18}", fg=color, bold=color is not None),
            f"{event.name:<14} {ident:<7}",
        ]
        if shown:
            cells.append(click.style(shown, fg="red" if event.failed else None))
        line = "  ".join(cells)
        with self._lock:
            click.echo(line if shown else line.rstrip(), file=self.file, color=self.color)


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[object]],
    *,
    align: str | None = None,
    indent: int = 2,
) -> str:
    """A plain-text table.

    Args:
        headers: The column titles.
        rows: The cells, turned into text with ``str``.
        align: One letter per column, ``l`` or ``r``; by default the first column is
            left-aligned and the others (numbers) right-aligned.
        indent: Spaces before every line.
    """
    cells = [[str(h) for h in headers], *([str(c) for c in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    align = align or "l" + "r" * (len(headers) - 1)

    def line(row: Sequence[str]) -> str:
        out = []
        for i, cell in enumerate(row):
            out.append(cell.ljust(widths[i]) if align[i] == "l" else cell.rjust(widths[i]))
        return " " * indent + "  ".join(out).rstrip()

    rule = " " * indent + "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])
