"""``dispatch-ext demo``: the bundled order pipeline on the embedded engine."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..errors import DispatchExtError
from .app import main


@main.command("demo")
@click.option(
    "--seconds",
    type=click.FloatRange(min=0),
    default=3.0,
    show_default=True,
    help="How long the stock-report cron entry keeps firing, once a second (at least until "
    "it fired once).",
)
@click.option(
    "--dir",
    "directory",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Folder for the working files demo.db, audit.jsonl and webhooks-outbox.db, "
    "replaced at each run (default: a new temporary folder).",
)
@click.option(
    "--db",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="SQLite database file (default: demo.db in the working folder, started afresh).",
)
@click.option("--no-color", is_flag=True, help="Plain text, even on a terminal.")
@click.option("-q", "--quiet", is_flag=True, help="Leave out the line per event.")
@click.pass_context
def demo(
    ctx: click.Context,
    seconds: float,
    directory: Path | None,
    db: Path | None,
    no_color: bool,
    quiet: bool,
) -> None:
    """Run the bundled order pipeline on the embedded engine, with every installed extension.

    A few jobs succeed, one fails twice and then succeeds, one exhausts its retries into
    the dead-letter queue, a three-step workflow completes and another fails at its middle
    step, a cron entry fires every second; then a graceful shutdown. The demo prints each
    event as it happens, then what every extension heard, where the audit log went, the
    OpenTelemetry figures and the webhooks its local receiver got and verified.

    Exits with status 1 when something did not happen as it should (a hook that never
    fired, an extension that raised, a webhook not delivered).
    """
    from ..demo.runner import DemoOptions, run_demo

    color = False if no_color or os.environ.get("NO_COLOR") else None
    options = DemoOptions(
        seconds=seconds,
        directory=directory,
        db=db,
        color=color,
        quiet=quiet,
        config_path=(ctx.obj or {}).get("config_path"),
    )
    try:
        status = run_demo(options)
    except DispatchExtError as exc:
        raise click.ClickException(str(exc)) from exc
    ctx.exit(status)
