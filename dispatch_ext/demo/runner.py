"""``dispatch-ext demo``: the order pipeline on the embedded engine, with every extension.

What a run does, in order:

1. Prepares its working files (SQLite database, audit log, webhook outbox) in a fresh
   temporary folder, or in ``--dir``.
2. Starts a webhook receiver on 127.0.0.1 with a secret made for this run, and an
   OpenTelemetry SDK meter provider read in memory (when the SDK is installed).
3. Builds an :class:`~dispatch_ext.engine.Engine` with the demo's own event counter;
   the engine discovers every installed extension, and the built-in ones get settings that
   point them at the working folder, the receiver and the meter provider.
4. Submits the sample orders of :class:`~dispatch_ext.demo.orders.OrderPipeline`, lets the
   stock-report cron entry fire every second, waits until everything settled, and shuts
   the engine down gracefully.
5. Prints what every extension heard, where the audit log is, the metrics and the
   webhook deliveries, and checks that everything happened as it should.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Config, load_config
from . import orders
from .console import Console
from .counter import EventCounter, check_expectations
from .orders import Expectation, OrderPipeline
from .receiver import WebhookReceiver, new_secret
from .report import count_lines, print_events, print_metrics, print_webhooks
from .telemetry import MetricsSink, start_metrics

if TYPE_CHECKING:
    from ..engine import Engine

__all__ = ["BUILT_INS", "DemoOptions", "run_demo"]

BUILT_INS: dict[str, str] = {
    "audit": "dispatch-ext-audit",
    "metrics": "dispatch-ext-metrics",
    "webhooks": "dispatch-ext-webhooks",
}
"""The built-in extensions: entry-point name -> distribution (a folder under plugins/)."""

DB_NAME = "demo.db"
AUDIT_NAME = "audit.jsonl"
OUTBOX_NAME = "webhooks-outbox.db"
_SQLITE_SIDECARS = ("", "-wal", "-shm", "-journal")
_CRON_WAIT = 3.0  # seconds; the stock report fires every second


@dataclass(frozen=True)
class DemoOptions:
    """How to run the demo (the command-line options).

    Attributes:
        seconds: How long the cron entry keeps firing (the run lasts at least this long).
        directory: Where the working files go; ``None`` makes a temporary folder.
        db: The SQLite database; ``None`` puts ``demo.db`` in the working folder.
        color: Force colours on or off; ``None`` uses them on a terminal only.
        quiet: Leave out the line per event.
        config_path: A ``dispatch.toml`` to read switches and settings from.
        settle_timeout: Seconds to wait for jobs to drain and webhooks to arrive.
    """

    seconds: float = 3.0
    directory: Path | None = None
    db: Path | None = None
    color: bool | None = None
    quiet: bool = False
    config_path: str | None = None
    settle_timeout: float = 30.0


@dataclass
class _Files:
    directory: Path
    db: Path
    audit: Path
    outbox: Path
    notes: list[str] = field(default_factory=list)


def _prepare_files(options: DemoOptions) -> _Files:
    if options.directory is None:
        directory = Path(tempfile.mkdtemp(prefix="dispatch-ext-demo-"))
    else:
        directory = options.directory.expanduser().resolve()
        directory.mkdir(parents=True, exist_ok=True)
    files = _Files(directory, directory / DB_NAME, directory / AUDIT_NAME, directory / OUTBOX_NAME)
    if options.db is not None:
        files.db = options.db.expanduser().resolve()
        files.db.parent.mkdir(parents=True, exist_ok=True)
        if files.db.exists():
            files.notes.append(f"{files.db} exists: jobs an earlier run left in it run as well")
    # The demo's own files start afresh, so that the counts below are this run's.
    for path in ([files.db] if options.db is None else []) + [files.outbox]:
        for suffix in _SQLITE_SIDECARS:
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    files.audit.unlink(missing_ok=True)
    return files


def _installed() -> set[str]:
    """Names of the installed extensions (entry points are read, nothing is imported)."""
    from .._discovery_scan import scan

    return {candidate.name for candidate in scan()}


def _demo_config(
    base: Config,
    installed: set[str],
    files: _Files,
    receiver: WebhookReceiver,
    metrics: MetricsSink | None,
) -> Config:
    """The user's configuration, with the built-ins pointed at this run's files and receiver.

    The webhooks settings are replaced as a whole, so a demo never posts to an endpoint
    configured for real use. Only installed built-ins get settings (discovery warns about
    settings for an extension that is not there).
    """
    settings: dict[str, Mapping[str, Any]] = dict(base.settings)
    if "audit" in installed:
        settings["audit"] = {**base.settings_for("audit"), "path": str(files.audit)}
    if "webhooks" in installed:
        settings["webhooks"] = {
            "url": receiver.url,
            "secret": receiver.secret,
            "outbox_path": str(files.outbox),
        }
    if metrics is not None and "metrics" in installed:
        settings["metrics"] = {**base.settings_for("metrics"), "meter_provider": metrics.provider}
    return dataclasses.replace(base, settings=settings)


class _Run:
    """One run of the demo; :meth:`main` returns the exit status."""

    def __init__(self, options: DemoOptions, console: Console) -> None:
        self.options = options
        self.console = console
        self.problems: list[str] = []
        self.expected: list[Expectation] = []
        self.counter = EventCounter(None if options.quiet else console.event)
        self.pipeline = OrderPipeline()
        self.config = Config()

    def main(self) -> int:
        out, options = self.console, self.options
        base = load_config(options.config_path)
        files = _prepare_files(options)
        out.echo(
            "dispatch-ext demo: an order pipeline on the embedded engine, with every "
            "installed extension",
            bold=True,
        )
        out.echo(f"Working files in {files.directory}")
        for note in files.notes:
            out.warn(f"  {note}")
        metrics = start_metrics()
        try:
            with WebhookReceiver(new_secret()) as receiver:
                installed = _installed()
                config = self.config = _demo_config(base, installed, files, receiver, metrics)
                if "webhooks" in installed:
                    out.echo(f"Webhook receiver on {receiver.url} (secret made for this run)")
                engine = self._build_engine(files, config)
                started = time.monotonic()
                asyncio.run(self._drive(engine))
                took = time.monotonic() - started
                self._report(engine, files, receiver, metrics, took)
        finally:
            if metrics is not None:
                metrics.shutdown()
        return self._verdict()

    def _build_engine(self, files: _Files, config: Config) -> Engine:
        from ..engine import Engine, SQLiteStore

        engine = Engine(store=SQLiteStore(files.db), extensions=[self.counter], config=config)
        self.pipeline.install(engine)
        return engine

    async def _drive(self, engine: Engine) -> None:
        seconds, settle = self.options.seconds, self.options.settle_timeout
        loop = asyncio.get_running_loop()
        async with engine:
            began = loop.time()
            self._print_extensions(engine)
            self.console.heading(
                f"Running the order pipeline for {seconds:g} s: jobs, two workflow runs, "
                "the stock report every second"
            )
            self.expected = await self.pipeline.submit_sample_orders(engine)
            await self._drain(engine, settle)
            left = seconds - (loop.time() - began)
            if left > 0:
                await asyncio.sleep(left)
            await self._first_cron_fire(_CRON_WAIT)
            await self._drain(engine, settle)
            self.console.note("Shutting down gracefully ...")

    async def _first_cron_fire(self, timeout: float) -> None:
        """However short the run, wait for the cron entry to fire once (it fires on the
        second)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.counter.counts["on_cron_fired"]:
            if asyncio.get_running_loop().time() >= deadline:
                return  # reported as a hook that never fired
            await asyncio.sleep(0.05)

    async def _drain(self, engine: Engine, timeout: float) -> None:
        try:
            await engine.drain(timeout=timeout)
        except (asyncio.TimeoutError, TimeoutError):
            self.problems.append(f"the engine did not drain within {timeout:g} s")

    def _print_extensions(self, engine: Engine) -> None:
        out = self.console
        registry = engine.registry
        records = {r.name: r for r in registry.records}
        out.heading(f"Extensions, in call order ({len(registry)})")
        for name, ext in registry.extensions():
            record = records.get(name)
            if ext is self.counter:
                origin = "this demo's event counter"
            elif record is not None:
                origin = f"{record.distribution or '?'} {record.version or ''}".rstrip()
            else:
                origin = type(ext).__module__
            hooks = len(registry.hooks_of(name))
            out.echo(f"  {name:<10} {origin:<32} {hooks:>2} hooks")
        for record in registry.records:
            if record.status == "loaded":
                continue
            text = f"  {record.name:<10} {record.status}: {record.error or ''}".rstrip()
            if record.status == "disabled":
                out.note(text)
            else:
                out.error(text)
                if record.name in BUILT_INS:
                    self.problems.append(f"built-in extension {record.name!r} {record.status}")
        if not self.config.autoload:
            out.warn(
                "  discovery is off (DISPATCH_EXT_AUTOLOAD=0 or autoload = false): "
                "only the demo's own counter runs"
            )
            return
        for name, dist in BUILT_INS.items():
            if name not in records:
                out.warn(f"  {name:<10} not installed: pip install {dist}")
                out.note(
                    f"  {'':<10} (from a clone of the repository: pip install -e plugins/{dist})"
                )

    def _report(
        self,
        engine: Engine,
        files: _Files,
        receiver: WebhookReceiver,
        metrics: MetricsSink | None,
        took: float,
    ) -> None:
        out, registry = self.console, engine.registry
        stats = registry.stats()
        names = [name for name, _ in registry.extensions()]
        names += [name for name in stats if name not in names]
        print_events(out, stats, names)
        for name, by_hook in stats.items():
            failed = sum(s.errors for s in by_hook.values())
            if failed:
                self.problems.append(f"extension {name!r} failed {failed} time(s) in its hooks")
        silent = self.counter.silent_hooks()
        if silent:
            self.problems.append(f"hooks that never fired: {', '.join(silent)}")
        self.problems += check_expectations(self.counter, self.expected)

        out.heading("Audit log")
        audit = registry.get("audit")
        if audit is None:
            out.note("  the audit extension is not loaded")
        else:
            path = Path(getattr(getattr(audit, "file", None), "path", files.audit))
            lines = count_lines(path)
            out.echo(f"  {path} ({lines} lines, one JSON object per event)")
            if not lines:
                self.problems.append(f"the audit log {path} has no lines")

        if registry.get("metrics") is None:
            out.heading("Metrics")
            out.note("  the metrics extension is not loaded")
        elif metrics is None:
            out.heading("Metrics")
            out.warn("  the OpenTelemetry SDK is not installed: pip install opentelemetry-sdk")
        else:
            rows = metrics.rows()
            print_metrics(out, rows)
            if not rows:
                self.problems.append("the metrics extension recorded nothing")

        if registry.get("webhooks") is None:
            out.heading("Webhooks")
            out.note("  the webhooks extension is not loaded")
        else:
            hooks = stats.get("webhooks", {})
            accepted = sum(s.calls - s.errors for hook, s in hooks.items() if hook != "on_shutdown")
            receiver.wait_for(accepted, self.options.settle_timeout)
            print_webhooks(out, receiver, accepted)
            delivered, verified = len(receiver.delivered), len(receiver.verified)
            if delivered < accepted:
                self.problems.append(
                    f"{accepted - delivered} webhook event(s) not delivered; they wait in "
                    f"{files.outbox} for the next start"
                )
            if verified != delivered:
                self.problems.append(f"{delivered - verified} webhook(s) failed verification")

        out.heading("Working files")
        out.echo(f"  folder          {files.directory}")
        out.echo(f"  database        {files.db}")
        if registry.get("audit") is not None:
            out.echo(f"  audit log       {files.audit}")
        if registry.get("webhooks") is not None:
            out.echo(f"  webhook outbox  {files.outbox}")
        out.echo(f"  the application {orders.__file__}")
        jobs = sum(1 for e in self.expected if e.kind == "job")
        runs = len(self.expected) - jobs
        fired = self.counter.counts["on_cron_fired"]
        out.echo()
        out.echo(
            f"Submitted {jobs} jobs and {runs} workflow runs, the cron entry fired "
            f"{_times(fired)}: {sum(self.counter.counts.values())} events in {took:.1f} s."
        )

    def _verdict(self) -> int:
        if not self.problems:
            self.console.echo(
                "Everything happened as expected: every hook fired, every job and run ended "
                "as it should, no extension failed.",
                fg="green",
                bold=True,
            )
            self.console.note(
                "Next: 'dispatch-ext list' and 'dispatch-ext hooks' show the "
                "installed extensions and what they hear."
            )
            return 0
        self.console.error("Something unexpected happened:")
        for problem in self.problems:
            self.console.error(f"  - {problem}")
        return 1


def _times(count: int) -> str:
    return "once" if count == 1 else f"{count} times"


def run_demo(options: DemoOptions | None = None, console: Console | None = None) -> int:
    """Run the demo; return ``0`` when everything happened as expected, else ``1``."""
    options = options or DemoOptions()
    return _Run(options, console or Console(options.color)).main()
