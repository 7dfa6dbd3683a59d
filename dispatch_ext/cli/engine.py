"""``dispatch-ext run`` and ``dispatch-ext dlq``: the embedded engine from the shell.

The engine is imported inside the commands, so that ``dispatch-ext list`` stays quick.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import ConfigError, DispatchExtError
from .app import main

if TYPE_CHECKING:
    from ..engine import Engine, SQLiteStore

__all__ = ["dlq", "load_app", "run"]

_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*\Z")


def _a(noun: str) -> str:
    return f"an {noun}" if noun[:1].lower() in "aeiou" else f"a {noun}"


def load_app(spec: str) -> Engine:
    """The engine named by ``MODULE:ATTR`` (``ATTR`` defaults to ``engine``).

    ``ATTR`` is an :class:`~dispatch_ext.engine.Engine` or a callable taking no argument
    that returns one. The current directory is importable, as with ``python -m``.
    """
    from ..engine import Engine

    module_name, _, attr = spec.partition(":")
    attr = attr or "engine"
    if not _DOTTED.match(module_name) or not _DOTTED.match(attr):
        raise click.UsageError(
            f"{spec!r} is not MODULE:ATTR (dotted names with one colon between them), "
            "e.g. 'myapp.tasks:engine'"
        )
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise click.ClickException(
                f"cannot import {module_name!r}: no such module (run from the directory "
                "that holds it, or install it)"
            ) from exc
        raise click.ClickException(f"importing {module_name!r} failed: {exc}") from exc
    except ConfigError as exc:  # a malformed dispatch.toml (the message names the file)
        raise click.ClickException(f"configuration error: {exc}") from exc
    except DispatchExtError as exc:  # a refused store, ...
        raise click.ClickException(f"importing {module_name!r} failed: {exc}") from exc
    except Exception as exc:
        raise click.ClickException(
            f"importing {module_name!r} failed: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        target: Any = module
        for part in attr.split("."):
            target = getattr(target, part)
    except AttributeError:
        raise click.ClickException(
            f"module {module_name!r} has no attribute {attr!r}; name the engine as "
            f"{module_name}:ATTR"
        ) from None
    what = f"{module_name}:{attr}"
    if not isinstance(target, Engine) and callable(target):
        try:
            built = target()
        except ConfigError as exc:
            raise click.ClickException(f"configuration error: {exc}") from exc
        except Exception as exc:
            raise click.ClickException(
                f"calling {what}() failed: {type(exc).__name__}: {exc}"
            ) from exc
        if not isinstance(built, Engine):
            raise click.ClickException(
                f"{what}() returned {_a(type(built).__name__)}, not an Engine "
                "(dispatch_ext.engine.Engine); name the engine, or a function returning one"
            )
        target = built
    if not isinstance(target, Engine):
        raise click.ClickException(
            f"{what} is {_a(type(target).__name__)}, not an Engine (dispatch_ext.engine.Engine) "
            "or a function returning one"
        )
    return target


@main.command("run")
@click.argument("app", metavar="MODULE:ATTR")
@click.option(
    "--shutdown-timeout",
    type=click.FloatRange(min=0),
    default=None,
    help="Seconds running jobs get to finish on shutdown (default: [engine] shutdown_timeout).",
)
@click.pass_context
def run(ctx: click.Context, app: str, shutdown_timeout: float | None) -> None:
    """Run the engine APP until SIGINT or SIGTERM, then shut down gracefully.

    APP is MODULE:ATTR, where ATTR is an Engine or a function returning one
    (default ATTR: engine). A second signal stops waiting for running jobs.
    """
    from ..engine.shutdown import serve

    config_path = (ctx.obj or {}).get("config_path")
    if config_path:
        os.environ["DISPATCH_CONFIG"] = config_path
    engine = load_app(app)

    def started() -> None:
        click.echo(
            f"dispatch-ext: running {app} ({engine.store!r}, worker {engine.worker_id}); "
            "Ctrl-C to stop",
            err=True,
        )

    try:
        serve(engine, shutdown_timeout, on_started=started)
    except DispatchExtError as exc:  # a store that cannot be opened, a cron entry, ...
        raise click.ClickException(str(exc)) from exc
    click.echo("dispatch-ext: stopped", err=True)


@main.group("dlq")
def dlq() -> None:
    """List and replay the dead-letter queue of a SQLite store."""


def _db_option(fn: Any) -> Any:
    return click.option(
        "--db",
        "db",
        type=click.Path(dir_okay=False),
        default=None,
        help="The SQLite store (default: [engine] database, else ./dispatch.sqlite3).",
    )(fn)


def _store(ctx: click.Context, db: str | None) -> SQLiteStore:
    from ..engine import SQLiteStore

    if db is None:
        from ..engine.settings import EngineSettings
        from ..errors import ConfigError

        try:
            from ..config import load_config

            settings = EngineSettings.from_config(load_config((ctx.obj or {}).get("config_path")))
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from exc
        path = settings.database
    else:
        path = Path(db)
    if not path.is_file():
        raise click.ClickException(
            f"no store at {path}: the file does not exist; pass --db PATH (or set "
            "[engine] database in dispatch.toml)"
        )
    return SQLiteStore(path, create=False)


def _refused(exc: DispatchExtError) -> click.ClickException:
    from ..engine.errors import NotAStoreError

    if isinstance(exc, NotAStoreError):
        return click.ClickException(
            f"{exc.path} is not a dispatch-ext store (no 'meta' table); pass --db with the "
            "engine's database"
        )
    return click.ClickException(str(exc))


@dlq.command("list")
@_db_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of entries.")
@click.option("--all", "include_replayed", is_flag=True, help="Include replayed entries.")
@click.option("--limit", type=click.IntRange(min=1), default=100, show_default=True)
@click.pass_context
def dlq_list(
    ctx: click.Context, db: str | None, as_json: bool, include_replayed: bool, limit: int
) -> None:
    """Dead-letter entries, newest first."""
    import asyncio

    store = _store(ctx, db)

    async def read() -> list[Any]:
        await store.open()
        try:
            return await store.list_dead(limit, include_replayed)
        finally:
            await store.close()

    try:
        entries = asyncio.run(read())
    except DispatchExtError as exc:
        raise _refused(exc) from exc
    if as_json:
        click.echo(json.dumps([entry.to_dict() for entry in entries], indent=2))
        return
    if not entries:
        click.echo(f"the dead-letter queue of {store.path} is empty")
        return
    rows: list[tuple[str, ...]] = [
        (
            str(entry.id),
            entry.job.name,
            entry.job.id,
            entry.failed_at.strftime("%Y-%m-%d %H:%M:%S") if entry.failed_at else "",
            _shorten(entry.error, 60),
            entry.replayed_as or "",
        )
        for entry in entries
    ]
    header: tuple[str, ...] = ("ID", "JOB", "JOB ID", "FAILED AT (UTC)", "ERROR", "REPLAYED AS")
    if not include_replayed:
        header, rows = header[:-1], [row[:-1] for row in rows]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        click.echo(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _shorten(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


@dlq.command("replay")
@click.argument("entry_id", metavar="ID", type=int)
@_db_option
@click.pass_context
def dlq_replay(ctx: click.Context, entry_id: int, db: str | None) -> None:
    """Enqueue the job of dead-letter entry ID again, as a new job.

    An engine running on the store picks it up. No hook fires here: the engine that
    runs the job emits its on_job_started and what follows.
    """
    import asyncio

    from ..engine.dlq import find_entry, replay_job
    from ..engine.errors import DeadLetterError

    store = _store(ctx, db)

    async def replay() -> tuple[str, str]:
        await store.open()
        try:
            entry = await find_entry(store, entry_id)
            job = replay_job(entry)
            await store.replay_dead(entry_id, job)
            return entry.job.name, job.id
        finally:
            await store.close()

    try:
        name, job_id = asyncio.run(replay())
    except DeadLetterError as exc:
        raise click.ClickException(str(exc)) from exc
    except DispatchExtError as exc:
        raise _refused(exc) from exc
    click.echo(f"replayed dead-letter entry {entry_id} (job {name!r}) as job {job_id}")
