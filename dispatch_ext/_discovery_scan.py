"""The entry-point scan: which extensions are installed, read once per process.

The scan goes through ``importlib.metadata.entry_points(group=...)``, the same code path
``pip``-installed packages are found by; it imports nothing it finds. On top it reads the
name and version of each distribution that has an entry in the group (from the header of
its ``METADATA``) and drops repeated entries of one distribution.

One malformed ``entry_points.txt`` anywhere makes ``entry_points()`` raise for every
group; then the scan reads each distribution on its own, so that only a distribution
whose broken file declares this group is reported (as a candidate carrying an error).
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from importlib import metadata

from .config import normalize_name

GROUP = "dispatch.extensions"
"""The entry-point group extensions register under."""


@dataclass(frozen=True)
class Candidate:
    """One installed entry point of the group, not imported yet."""

    name: str
    value: str
    distribution: str | None
    version: str | None
    error: str | None = None
    """Set when the distribution's entry points could not be read at all."""

    @property
    def dist_key(self) -> str:
        """The distribution name compared case-, ``-`` and ``_``-insensitively."""
        return normalize_name(self.distribution) if self.distribution else ""

    def describe(self) -> str:
        """``'name = value' from dist 1.0``, for messages."""
        where = ""
        if self.distribution:
            where = f" from {self.distribution}" + (f" {self.version}" if self.version else "")
        return f"entry point '{self.name} = {self.value}'{where}"


def _header_fields(text: str | None) -> tuple[str | None, str | None]:
    """``Name`` and ``Version`` from the header block of a METADATA / PKG-INFO file."""
    name = version = None
    for line in (text or "").splitlines():
        if not line.strip():
            break
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key == "name" and name is None:
            name = value.strip() or None
        elif key == "version" and version is None:
            version = value.strip() or None
        if name and version:
            break
    return name, version


def _identity(dist: metadata.Distribution | None) -> tuple[str | None, str | None]:
    if dist is None:
        return None, None
    try:
        text = dist.read_text("METADATA") or dist.read_text("PKG-INFO")
    except Exception:  # a custom Distribution that cannot read its files
        return None, None
    return _header_fields(text)


class _Collector:
    """Candidates in scan order, each (distribution, name, value) once."""

    def __init__(self) -> None:
        self.found: list[Candidate] = []
        self._seen: set[tuple[str, str, str]] = set()

    def add(self, candidate: Candidate) -> None:
        key = (candidate.dist_key, candidate.name, candidate.value)
        if key not in self._seen:  # a line repeated in entry_points.txt
            self._seen.add(key)
            self.found.append(candidate)


def scan_now() -> tuple[Candidate, ...]:
    """Scan the installed distributions (no cache)."""
    try:
        entries = list(metadata.entry_points(group=GROUP))
    except Exception:
        return _scan_each_distribution()
    collector = _Collector()
    identities: dict[int, tuple[str | None, str | None]] = {}
    for entry in entries:
        dist = getattr(entry, "dist", None)
        identity = identities.get(id(dist))
        if identity is None:
            identity = identities[id(dist)] = _identity(dist)
        collector.add(Candidate(entry.name, entry.value, *identity))
    return tuple(collector.found)


def _scan_each_distribution() -> tuple[Candidate, ...]:
    """The slow path: one distribution at a time, a broken one reported, not fatal."""
    collector = _Collector()
    distributions: set[str] = set()
    for dist in metadata.distributions():
        name, version = _identity(dist)
        if name:
            if normalize_name(name) in distributions:  # the first on sys.path wins
                continue
            distributions.add(normalize_name(name))
        try:
            entries = [entry for entry in dist.entry_points if entry.group == GROUP]
        except Exception as exc:
            try:
                declares_group = f"[{GROUP}]" in (dist.read_text("entry_points.txt") or "")
            except Exception:
                declares_group = False
            if declares_group:
                where = f"{name or 'a distribution'} {version or ''}".rstrip()
                error = (
                    f"the entry_points.txt of {where} cannot be read: {type(exc).__name__}: "
                    f"{exc}; every line must read 'name = module:attribute'. Reinstall or "
                    f"fix the distribution"
                )
                collector.add(Candidate(name or "?", "entry_points.txt", name, version, error))
            continue
        for entry in entries:
            collector.add(Candidate(entry.name, entry.value, name, version))
    return tuple(collector.found)


_lock = threading.Lock()
_cache: tuple[tuple[str, ...], tuple[Candidate, ...]] | None = None


def scan(*, refresh: bool = False) -> tuple[Candidate, ...]:
    """The installed candidates, scanned once per process and per ``sys.path``."""
    global _cache
    key = tuple(sys.path)
    with _lock:
        if refresh or _cache is None or _cache[0] != key:
            _cache = (key, scan_now())
        return _cache[1]


def clear_cache() -> None:
    """Forget the scan; the next :func:`scan` reads the installed distributions again."""
    global _cache
    with _lock:
        _cache = None
