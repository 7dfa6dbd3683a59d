"""Finding installed extensions: the ``dispatch.extensions`` entry-point group.

:func:`discover` returns one :class:`ExtensionRecord` per installed extension, in load
order; :func:`load_into` registers the ones that loaded into a
:class:`~dispatch_ext.Registry`. What happens, step by step:

1. The installed entry points of the group are scanned once per process (and again when
   ``sys.path`` changes, or with ``refresh=True`` / :func:`clear_cache`). Nothing is
   imported by the scan. A distribution seen twice, or an entry line repeated, counts
   once; a distribution whose ``entry_points.txt`` cannot be parsed is ``failed`` and
   does not hide the others.
2. Switches are applied before anything is imported: with autoload off nothing is
   returned; an extension outside the allowlist or inside the blocklist is ``disabled``.
   Names match the entry-point name or the distribution name, case, ``-`` and ``_`` alike.
   A name in ``enable``, ``disable``, ``order``, ``[dispatch.timeouts]`` or
   ``[extensions.*]`` that matches no installed extension is logged as a warning with
   the closest installed name (:func:`unknown_names` lists them).
3. When two distributions claim one name, the first by distribution name loads and the
   others are ``conflict`` (whatever the install order or ``sys.path`` order).
4. Each remaining entry point is imported and built: a class is instantiated and a
   function is called with the extension's settings as keyword arguments; any other
   object (a module, an instance) is used as it is. Any exception makes that extension
   ``failed``; hooks that do not validate make it ``invalid``; the others load.
5. In strict mode, after all of this, :class:`~dispatch_ext.errors.ExtensionLoadError`
   is raised naming every extension that did not load.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, NamedTuple

from ._discovery_build import build
from ._discovery_scan import GROUP, Candidate, scan
from ._discovery_scan import clear_cache as _clear_scan
from .config import Config, load_config, normalize_name
from .errors import ExtensionLoadError, RegistrationError

if TYPE_CHECKING:
    from .registry import Registry

__all__ = [
    "GROUP",
    "STATUSES",
    "ExtensionRecord",
    "UnknownName",
    "clear_cache",
    "discover",
    "load_into",
    "unknown_names",
]

logger = logging.getLogger("dispatch_ext")

STATUSES = ("loaded", "failed", "disabled", "conflict", "invalid")
"""Every status a record can have."""

_BAD = frozenset({"failed", "conflict", "invalid"})


@dataclass(frozen=True)
class ExtensionRecord:
    """What discovery found out about one installed extension."""

    name: str
    """The entry-point name; the extension is registered under it."""
    value: str
    """The entry-point value, e.g. ``"pkg.mod:Ext"``."""
    distribution: str | None
    """The distribution that installed it, as its metadata spells it."""
    version: str | None
    """That distribution's version."""
    status: str
    """``loaded``, ``failed``, ``disabled``, ``conflict`` or ``invalid``."""
    error: str | None
    """Why it did not load: what happened and what to do."""
    hooks: tuple[str, ...]
    """The hooks it implements, in reference order; empty unless loaded."""
    extension: object | None = field(default=None, compare=False, repr=False)
    """The built extension object, when loaded."""

    @property
    def ok(self) -> bool:
        """Whether nothing is wrong with it (``loaded`` or ``disabled``)."""
        return self.status not in _BAD

    def to_dict(self) -> dict[str, Any]:
        """The JSON form: keys name, distribution, version, status, hooks, error."""
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "status": self.status,
            "hooks": list(self.hooks),
            "error": self.error,
        }


def clear_cache() -> None:
    """Forget the entry-point scan; the next :func:`discover` scans again."""
    _clear_scan()


def _keys(candidate: Candidate) -> set[str]:
    keys = {normalize_name(candidate.name)}
    if candidate.distribution:
        keys.add(candidate.dist_key)
    return keys


def _sort_key(candidate: Candidate, order: dict[str, int]) -> tuple[int, str, str]:
    rank = min((order[k] for k in _keys(candidate) if k in order), default=len(order))
    return (rank, candidate.name, candidate.dist_key)


def _record(candidate: Candidate, status: str, error: str | None = None) -> ExtensionRecord:
    return ExtensionRecord(
        candidate.name,
        candidate.value,
        candidate.distribution,
        candidate.version,
        status,
        error,
        (),
    )


def _conflict_message(loser: Candidate, winner: Candidate) -> str:
    def label(c: Candidate) -> str:
        return f"{c.distribution or '?'} {c.version or ''}".rstrip()

    used, unused = winner.distribution or "?", loser.distribution or "?"
    return (
        f"extension name {loser.name!r} is claimed by two distributions, {label(winner)} "
        f"({winner.value}) and {label(loser)} ({loser.value}); the one from {used} is used "
        f"(first by distribution name), the one from {unused} is not loaded. To keep "
        f"{used}'s, uninstall {unused} or set DISPATCH_EXT_DISABLE={unused}; to use "
        f"{unused}'s instead, uninstall {used} or set DISPATCH_EXT_DISABLE={used}. "
        f"Disabling a distribution switches off every extension it installs (disabling "
        f"the name {loser.name!r} would switch off both)"
    )


class UnknownName(NamedTuple):
    """A name in the configuration that matches no installed extension."""

    where: str
    """Where the name was found: ``"DISPATCH_EXT_ENABLE"``, ``"[dispatch] order in
    /srv/dispatch.toml"``, ``"[extensions.audti] in /srv/dispatch.toml"``..."""
    name: str
    """The name as written there."""
    suggestion: str | None
    """The closest installed entry-point or distribution name, if any is close."""

    def describe(self) -> str:
        """One line: where, the name, and the suggestion."""
        hint = f"; did you mean {self.suggestion!r}?" if self.suggestion else ""
        return (
            f"{self.where} names {self.name!r}, but no installed extension has that "
            f"entry-point or distribution name{hint}"
        )


def _listed_names(config: Config) -> list[tuple[str, str]]:
    """Every (where, name) of the configuration that should name an installed extension."""
    in_file = f" in {config.path}" if config.path else ""
    listed: list[tuple[str, str]] = []
    for key in ("enable", "disable", "order"):
        where = config.origins.get(key) or f"[dispatch] {key}{in_file}"
        listed += [(where, name) for name in getattr(config, key) or ()]
    listed += [(f"[dispatch.timeouts]{in_file}", name) for name in config.timeouts]
    listed += [(f"[extensions.{name}]{in_file}", name) for name in config.settings]
    return listed


def unknown_names(config: Config | None = None, *, refresh: bool = False) -> list[UnknownName]:
    """The names in ``config`` that match no installed extension, with a suggestion each.

    Looks at ``enable``, ``disable``, ``order``, ``[dispatch.timeouts]`` and the
    ``[extensions.*]`` tables. A name matches an extension by its entry-point name or its
    distribution name, case, ``-`` and ``_`` alike. Only the installed metadata is read:
    nothing is imported. ``None`` reads the configuration with
    :func:`~dispatch_ext.config.load_config`.
    """
    if config is None:
        config = load_config()
    return _unknown(config, scan(refresh=refresh))


def _unknown(config: Config, candidates: Iterable[Candidate]) -> list[UnknownName]:
    spellings: dict[str, str] = {}  # normalised -> as installed; entry-point names first
    for candidate in sorted(candidates, key=lambda c: (c.name, c.dist_key)):
        spellings.setdefault(normalize_name(candidate.name), candidate.name)
    for candidate in sorted(candidates, key=lambda c: c.dist_key):
        if candidate.distribution:
            spellings.setdefault(candidate.dist_key, candidate.distribution)
    found: list[UnknownName] = []
    seen: set[tuple[str, str]] = set()
    for where, name in _listed_names(config):
        key = normalize_name(name)
        if key in spellings or (where, key) in seen:
            continue
        seen.add((where, key))
        close = difflib.get_close_matches(key, list(spellings), n=1)
        found.append(UnknownName(where, name, spellings[close[0]] if close else None))
    return found


def _one_line(text: str) -> str:
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def _log_failure(candidate: Candidate, error: str | None, exc: BaseException | None) -> None:
    """One line at WARNING; the traceback, for whoever wants it, at DEBUG."""
    what = f"{type(exc).__name__}: {exc}" if exc is not None else (error or "no reason given")
    logger.warning(
        "extension %r (%s) failed to load: %s; run 'dispatch-ext check' for the cause and the fix",
        candidate.name,
        candidate.value,
        _one_line(what),
    )
    if exc is not None:
        logger.debug(
            "extension %r (%s): traceback of the load failure",
            candidate.name,
            candidate.value,
            exc_info=exc,
        )


def discover(config: Config | None = None, *, refresh: bool = False) -> list[ExtensionRecord]:
    """Find, import and build the installed extensions; one record each, in load order.

    Args:
        config: Switches, order and settings; ``None`` reads them with
            :func:`~dispatch_ext.config.load_config`.
        refresh: Scan the installed distributions again instead of reusing the scan.

    Raises:
        ExtensionLoadError: In strict mode (``config.strict``, which
            :func:`~dispatch_ext.config.load_config` sets from ``DISPATCH_EXT_STRICT=1``),
            after everything was tried, when any extension failed, conflicts or is
            invalid.
    """
    if config is None:
        config = load_config()
    if not config.autoload:
        return []
    candidates = scan(refresh=refresh)
    for unknown in _unknown(config, candidates):
        logger.warning("%s", unknown.describe())
    order: dict[str, int] = {}
    for position, name in enumerate(config.order):
        order.setdefault(normalize_name(name), position)
    enable = None if config.enable is None else {normalize_name(n) for n in config.enable}
    disable = {normalize_name(n) for n in config.disable}
    config_file = str(config.path) if config.path else "dispatch.toml"

    def switched_off(candidate: Candidate) -> bool:
        keys = _keys(candidate)
        return bool((enable is not None and not keys & enable) or keys & disable)

    winners: dict[str, Candidate] = {}
    for candidate in sorted(candidates, key=lambda c: c.dist_key):
        if not switched_off(candidate):
            winners.setdefault(candidate.name, candidate)

    records: list[ExtensionRecord] = []
    for candidate in sorted(candidates, key=lambda c: _sort_key(c, order)):
        if switched_off(candidate):
            records.append(_record(candidate, "disabled"))
            continue
        winner = winners[candidate.name]
        if winner is not candidate:
            records.append(_record(candidate, "conflict", _conflict_message(candidate, winner)))
            continue
        if candidate.error is not None:
            records.append(_record(candidate, "failed", candidate.error))
            logger.warning("%s", candidate.error)
            continue
        built = build(candidate, config.settings_for(candidate.name), config_file)
        records.append(
            ExtensionRecord(
                candidate.name,
                candidate.value,
                candidate.distribution,
                candidate.version,
                built.status,
                built.error,
                built.hooks,
                built.extension,
            )
        )
        if built.status == "failed":
            _log_failure(candidate, built.error, built.exception)
    for record in records:
        if record.status in {"conflict", "invalid"}:
            logger.warning("%s", record.error)
    if config.strict:
        _raise_if_bad(records)
    return records


def _raise_if_bad(records: list[ExtensionRecord]) -> None:
    bad = [r for r in records if r.status in _BAD]
    if bad:
        lines = "\n".join(f"- {r.name} ({r.status}): {r.error}" for r in bad)
        raise ExtensionLoadError(
            f"{len(bad)} extension(s) did not load (strict mode):\n{lines}",
            records=list(bad),
        )


def load_into(registry: Registry, config: Config | None = None) -> list[ExtensionRecord]:
    """Discover the installed extensions and register the loaded ones into ``registry``.

    Each is registered under its entry-point name, with its configured timeout from
    ``[dispatch.timeouts]``. An extension the registry refuses (its name is taken) is
    recorded as ``conflict`` or ``invalid`` instead of ``loaded``. Returns the records.
    """
    if config is None:
        config = load_config()
    records = discover(config)
    result: list[ExtensionRecord] = []
    for record in records:
        if record.status == "loaded":
            record = _register(registry, record, config)
        result.append(record)
    if config.strict:
        _raise_if_bad(result)
    return result


def _register(registry: Registry, record: ExtensionRecord, config: Config) -> ExtensionRecord:
    taken = registry.get(record.name)
    try:
        registry.register(
            record.extension, name=record.name, timeout=config.timeout_for(record.name)
        )
    except RegistrationError as exc:
        status = "conflict" if taken is not None and taken is not record.extension else "invalid"
        where = f"entry point '{record.name} = {record.value}'"
        error = f"{where} was refused by the registry: {exc}"
        logger.warning("%s", error)
        return replace(record, status=status, error=error, hooks=(), extension=None)
    return record
