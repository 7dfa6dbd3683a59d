"""``dispatch-ext list | hooks | check | info``: the installed extensions and their hooks.

Every command discovers and registers the installed extensions the way an engine does at
start-up (same configuration file, switches, order and settings), into a registry of its
own. Strict mode is not applied here: these commands exist to show what failed, so a
failure is reported, not raised.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from .app import main

if TYPE_CHECKING:
    from ..config import Config
    from ..discovery import ExtensionRecord, UnknownName
    from ..registry import Registry

__all__ = ["check_command", "hooks_command", "info_command", "list_command"]

_BAD = ("failed", "conflict", "invalid")
_SUMMARY_ORDER = ("loaded", "failed", "invalid", "conflict", "disabled")
_HOOKS_WIDTH = 48  # characters of hook names shown in the `list` table


# -- loading ----------------------------------------------------------------------------


@dataclass
class _Loaded:
    config: Config
    records: list[ExtensionRecord]
    registry: Registry
    unknown: list[UnknownName]
    """Names in the configuration that match no installed extension."""

    def warn_unknown(self) -> None:
        """Print each unknown name on stderr (the table on stdout stays as it is)."""
        for unknown in self.unknown:
            click.echo(f"Warning: {unknown.describe()}", err=True)


def _load_config(ctx: click.Context) -> Config:
    from ..config import load_config
    from ..errors import ConfigError

    try:
        return load_config((ctx.obj or {}).get("config_path"), given_as="--config")
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


@contextmanager
def _not_strict() -> Iterator[None]:
    """Discovery reads ``DISPATCH_EXT_STRICT`` itself; these commands report instead."""
    saved = os.environ.pop("DISPATCH_EXT_STRICT", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["DISPATCH_EXT_STRICT"] = saved


@contextmanager
def _quiet_log() -> Iterator[None]:
    """Discovery logs each failure; without logging set up, that would repeat the report."""
    log = logging.getLogger("dispatch_ext")
    if log.handlers or logging.getLogger().handlers:
        yield  # logging is configured: leave it to the configuration
        return
    silent = logging.NullHandler()
    log.addHandler(silent)
    try:
        yield
    finally:
        log.removeHandler(silent)


def _load(ctx: click.Context) -> _Loaded:
    from dataclasses import replace

    from ..discovery import load_into, unknown_names
    from ..registry import Registry

    config = replace(_load_config(ctx), strict=False)
    registry = Registry(strict=False, timeout=config.hook_timeout)
    ctx.call_on_close(registry.close)
    with _not_strict(), _quiet_log():
        records = load_into(registry, config)
    return _Loaded(config, records, registry, unknown_names(config))


# -- formatting helpers -------------------------------------------------------------------


def status_detail(extension: object) -> str | None:
    """The extension's own one-line status (``status_detail``), if it has one."""
    if extension is None:
        return None
    try:
        value = getattr(extension, "status_detail", None)
        if callable(value):
            value = value()
    except Exception as exc:
        return f"(status_detail raised {type(exc).__name__}: {exc})"
    if value is None:
        return None
    return str(value) or None


def description(extension: object) -> str | None:
    """The first line of the extension's docstring (its class's, for an instance)."""
    if extension is None:
        return None
    import inspect

    doc = inspect.getdoc(extension)
    if not doc and not inspect.ismodule(extension):
        doc = inspect.getdoc(type(extension))
    if not doc:
        return None
    return doc.strip().splitlines()[0].strip() or None


def _first_line(text: str | None) -> str:
    return "" if not text else text.strip().splitlines()[0]


def hooks_summary(hooks: Sequence[str], width: int = _HOOKS_WIDTH) -> str:
    """``"all 13"``, or a count and the names without ``on_``, cut to ``width`` characters."""
    from ..hookspecs import HOOK_NAMES

    if not hooks:
        return "-"
    if set(hooks) == set(HOOK_NAMES):
        return f"all {len(HOOK_NAMES)}"
    short = [hook.removeprefix("on_") for hook in hooks]
    shown: list[str] = []
    for index, name in enumerate(short):
        rest = len(short) - index - 1
        tail = f", +{rest} more" if rest else ""
        if shown and len(", ".join([*shown, name])) + len(tail) > width:
            break
        shown.append(name)
    text = ", ".join(shown)
    if len(shown) < len(short):
        text += f", +{len(short) - len(shown)} more"
    return f"{len(hooks)}: {text}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = [str(c).ljust(w) for c, w in zip(cells[:-1], widths[:-1], strict=True)]
        return "  ".join([*padded, str(cells[-1])]).rstrip()

    return [line(headers), *(line(row) for row in rows)]


def _dump(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, ensure_ascii=False))


def _counts(records: Sequence[ExtensionRecord]) -> str:
    """``"2 loaded, 1 failed"``: statuses always in the order of ``_SUMMARY_ORDER``."""
    counts = dict.fromkeys(_SUMMARY_ORDER, 0)
    for record in records:
        counts[record.status] = counts.get(record.status, 0) + 1
    return ", ".join(f"{n} {status}" for status, n in counts.items() if n)


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _nothing_found(config: Config) -> str:
    from ..discovery import GROUP

    if not config.autoload:
        return (
            "Autoload is off (DISPATCH_EXT_AUTOLOAD=0 or [dispatch] autoload = false): "
            "no extension is discovered."
        )
    return f"No extensions are installed (entry-point group {GROUP!r})."


# -- list -------------------------------------------------------------------------------


@main.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option("--all", "show_all", is_flag=True, help="Include disabled extensions.")
@click.pass_context
def list_command(ctx: click.Context, as_json: bool, show_all: bool) -> None:
    """List the installed extensions, in load order, with their status and hooks.

    Failed, conflicting and invalid extensions are listed with the reason; disabled
    ones only with --all. The JSON form is a list of objects with the keys name,
    distribution, version, status, hooks and error.
    """
    loaded = _load(ctx)
    loaded.warn_unknown()
    shown = [r for r in loaded.records if show_all or r.status != "disabled"]
    if as_json:
        _dump([record.to_dict() for record in shown])
        return
    hidden = len(loaded.records) - len(shown)
    if not shown:
        if hidden:
            click.echo(
                f"{_plural(hidden, 'extension')} installed, all disabled (--all shows them)."
            )
        else:
            click.echo(_nothing_found(loaded.config))
        return

    rows = [
        [r.name, r.distribution or "-", r.version or "-", r.status, hooks_summary(r.hooks)]
        for r in shown
    ]
    header, *lines = _table(["NAME", "DISTRIBUTION", "VERSION", "STATUS", "HOOKS"], rows)
    click.echo(header)
    for record, line in zip(shown, lines, strict=True):
        click.echo(line)
        detail = status_detail(record.extension)
        if detail:
            click.echo(f"  {detail}")
        if record.error:
            click.echo(f"  error: {_first_line(record.error)}")

    summary = f"\n{_plural(len(shown), 'extension')}: {_counts(shown)}"
    if hidden:
        summary += f" ({hidden} disabled not shown; --all shows them)"
    click.echo(summary + ".")
    if any(r.status in _BAD for r in shown):
        click.echo("'dispatch-ext check' explains what to do about the others.")


# -- hooks ------------------------------------------------------------------------------


def _hook_rows(registry: Registry) -> list[dict[str, Any]]:
    from .. import hookspecs

    rows = []
    for hook in hookspecs.HOOK_NAMES:
        rows.append(
            {
                "hook": hook,
                "description": _first_line(getattr(hookspecs, hook).__doc__),
                "implementers": registry.implementers(hook),
            }
        )
    return rows


@main.command("hooks")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.pass_context
def hooks_command(ctx: click.Context, as_json: bool) -> None:
    """List every hook, what it means, and the extensions implementing it in call order."""
    loaded = _load(ctx)
    loaded.warn_unknown()
    rows = _hook_rows(loaded.registry)
    if as_json:
        _dump(rows)
        return
    table = _table(
        ["HOOK", "IMPLEMENTERS", "FIRES WHEN"],
        [[r["hook"], ", ".join(r["implementers"]) or "-", r["description"]] for r in rows],
    )
    click.echo("\n".join(table))


# -- check ------------------------------------------------------------------------------


def _advice(record: ExtensionRecord, records: Sequence[ExtensionRecord]) -> str:
    name, dist = record.name, record.distribution or record.name
    if record.status == "conflict":
        used = next(
            (
                r.distribution
                for r in records
                if r.name == name and r.status == "loaded" and r.distribution != dist
            ),
            None,
        )
        if used is None:  # refused by the registry: the name is taken in code
            return (
                f"register the other extension under another name, or switch this one "
                f"off by its name: DISPATCH_EXT_DISABLE={name}"
            )
        return (
            f"{used} provides {name!r}. To keep it: uninstall {dist}, or set "
            f"DISPATCH_EXT_DISABLE={dist}, which switches off every extension of {dist}. "
            f"To use {dist}'s {name!r} instead: uninstall {used}, or set "
            f"DISPATCH_EXT_DISABLE={used}, which switches off every extension of {used}"
        )
    if record.status == "invalid":
        return (
            f"correct the method names or arguments named above in {dist} ('dispatch-ext "
            f"hooks' lists the hooks), or switch it off: DISPATCH_EXT_DISABLE={name}"
        )
    return (
        f"install what is missing, correct the entry point or the settings under "
        f"[extensions.{name}], reinstall {dist}, or switch it off: DISPATCH_EXT_DISABLE={name}"
    )


def _installed_names(records: Sequence[ExtensionRecord]) -> str:
    """`` (installed: a, b)``; empty when nothing was discovered (autoload off)."""
    names = sorted({r.name for r in records})
    return f" (installed: {', '.join(names)})" if names else ""


def _report_unknown(unknown: Sequence[UnknownName], records: Sequence[ExtensionRecord]) -> None:
    for item in unknown:
        click.echo(f"UNKNOWN NAME: {item.name!r} in {item.where}")
        click.echo(
            "  why: no installed extension has that entry-point or distribution name"
            f"{_installed_names(records)}"
        )
        if item.suggestion:
            fix = f"did you mean {item.suggestion!r}? Correct the name, or remove it"
        else:
            fix = "correct the name, or remove it ('dispatch-ext list --all' lists them all)"
        click.echo(f"  fix: {fix}")
        click.echo()


@main.command("check")
@click.pass_context
def check_command(ctx: click.Context) -> None:
    """Exit with status 1 when an extension failed, conflicts or is invalid.

    Also when the configuration names an extension that is not installed (in enable,
    disable, order, [dispatch.timeouts] or [extensions.NAME]): a typo there would
    otherwise go unnoticed. Prints each problem with the reason and what to do; for the
    CI of plugin authors and for deployments.
    """
    loaded_all = _load(ctx)
    records, unknown = loaded_all.records, loaded_all.unknown
    bad = [r for r in records if r.status in _BAD]
    loaded = [r.name for r in records if r.status == "loaded"]
    disabled = [r.name for r in records if r.status == "disabled"]
    if not bad and not unknown:
        if not records:
            click.echo("OK: no extensions are installed.")
            return
        text = f"OK: {_plural(len(loaded), 'extension')} loaded"
        if loaded:
            text += f" ({', '.join(loaded)})"
        if disabled:
            text += f"; {len(disabled)} disabled"
        click.echo(text + ".")
        return
    _report_unknown(unknown, records)
    for record in bad:
        origin = " ".join(filter(None, [record.distribution, record.version])) or "?"
        click.echo(f"{record.status.upper()}: {record.name} ({origin}, {record.value})")
        click.echo(f"  why: {record.error or 'no reason was recorded'}")
        click.echo(f"  fix: {_advice(record, records)}")
        click.echo()
    enabled = len(records) - len(disabled)
    summary = []
    if unknown:
        summary.append(
            f"the configuration names {_plural(len(unknown), 'extension')} that "
            f"{'is' if len(unknown) == 1 else 'are'} not installed"
        )
    if bad:
        summary.append(
            f"{len(bad)} of {_plural(enabled, 'enabled extension')} did not load ({_counts(bad)})"
        )
    else:
        summary.append(f"{_plural(enabled, 'enabled extension')}")
    click.echo(f"{'; '.join(summary)}; {len(loaded)} loaded.")
    ctx.exit(1)


# -- info -------------------------------------------------------------------------------


def _matches(records: Sequence[ExtensionRecord], wanted: str) -> list[ExtensionRecord]:
    from ..config import normalize_name

    exact = [r for r in records if r.name == wanted]
    if exact:
        return exact
    key = normalize_name(wanted)
    return [
        r
        for r in records
        if normalize_name(r.name) == key
        or (r.distribution is not None and normalize_name(r.distribution) == key)
    ]


def info_dict(record: ExtensionRecord) -> dict[str, Any]:
    """Everything known about one extension, as JSON-ready data."""
    return {
        "name": record.name,
        "value": record.value,
        "distribution": record.distribution,
        "version": record.version,
        "status": record.status,
        "error": record.error,
        "hooks": list(record.hooks),
        "status_detail": status_detail(record.extension),
        "description": description(record.extension),
    }


def _info_lines(info: dict[str, Any]) -> list[str]:
    hooks = info["hooks"]
    fields = [
        ("name", info["name"]),
        ("description", info["description"]),
        ("entry point", info["value"]),
        ("distribution", " ".join(filter(None, [info["distribution"], info["version"]]))),
        ("status", info["status"]),
        ("detail", info["status_detail"]),
        (f"hooks ({len(hooks)})", ", ".join(hooks)),
        ("error", info["error"]),
    ]
    import textwrap

    width = max(len(label) for label, _ in fields) + 3
    return [
        textwrap.fill(
            str(value or "-"),
            width=max(width + 40, 100),
            initial_indent=f"{label}:".ljust(width),
            subsequent_indent=" " * width,
            break_long_words=False,
            break_on_hyphens=False,
        )
        for label, value in fields
    ]


@main.command("info")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@click.pass_context
def info_command(ctx: click.Context, name: str, as_json: bool) -> None:
    """Show everything known about one extension (by entry-point or distribution name).

    When two distributions claim NAME, every claim is shown (--json: the first); name a
    distribution to pick one.
    """
    import difflib

    records = _load(ctx).records
    found = _matches(records, name)
    if not found:
        choices = sorted({r.name for r in records} | {r.distribution or "" for r in records})
        close = difflib.get_close_matches(name, [c for c in choices if c], n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        click.echo(
            f"Error: no extension named {name!r} is installed{hint} "
            "('dispatch-ext list --all' lists every installed extension)",
            err=True,
        )
        ctx.exit(2)
    if as_json:
        _dump(info_dict(found[0]))
        return
    for index, record in enumerate(found):
        if index:
            click.echo()
        click.echo("\n".join(_info_lines(info_dict(record))))
