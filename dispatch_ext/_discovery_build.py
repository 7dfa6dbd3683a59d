"""Importing and building one discovered extension, every fault turned into a message."""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import hookspecs
from ._discovery_scan import Candidate
from ._validation import collect_impls
from .errors import RegistrationError

_VALUE = re.compile(r"^(?P<module>[\w.]+)\s*(?::\s*(?P<attr>[\w.]+)\s*)?(?:\[.*\]\s*)?$")


@dataclass(frozen=True)
class Built:
    """The outcome of building one candidate."""

    status: str  # "loaded" | "failed" | "invalid"
    error: str | None = None
    hooks: tuple[str, ...] = ()
    extension: object | None = None
    exception: BaseException | None = None


def import_target(value: str) -> object:
    """Import what an entry-point value names (``pkg.mod`` or ``pkg.mod:Obj.attr``)."""
    match = _VALUE.match(value.strip())
    if match is None:
        raise ValueError(
            f"{value!r} is not an entry-point value; write it as 'package.module:Name'"
        )
    target: object = importlib.import_module(match["module"])
    for part in filter(None, (match["attr"] or "").split(".")):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            public = [n for n in dir(target) if not n.startswith("_")]
            close = difflib.get_close_matches(part, public, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise AttributeError(f"{exc}{hint}") from exc
    return target


def is_factory(target: object) -> bool:
    """Classes and functions are called to build the extension; anything else is ready."""
    return (
        inspect.isclass(target)
        or inspect.isroutine(target)
        or isinstance(target, functools.partial)
    )


def _settings_hint(candidate: Candidate, config_file: str) -> str:
    return f"; check [extensions.{candidate.name}] in {config_file}"


def build(candidate: Candidate, settings: Mapping[str, Any], config_file: str) -> Built:
    """Import, build and validate one extension; never raises an ``Exception``."""
    where = candidate.describe()
    try:
        target = import_target(candidate.value)
    except (Exception, SystemExit) as exc:
        return Built(
            "failed",
            f"{where} could not be imported: {type(exc).__name__}: {exc}; fix or uninstall "
            f"the distribution, or disable it with DISPATCH_EXT_DISABLE={candidate.name}",
            exception=exc,
        )
    if callable(target) and is_factory(target):
        kind = "class" if inspect.isclass(target) else "factory"
        try:
            extension = target(**settings)
        except (Exception, SystemExit) as exc:
            hint = _settings_hint(candidate, config_file) if settings else ""
            return Built(
                "failed",
                f"{where}: building the extension ({kind} "
                f"{getattr(target, '__qualname__', target)!r}) raised "
                f"{type(exc).__name__}: {exc}{hint}",
                exception=exc,
            )
        if extension is None:
            return Built(
                "failed",
                f"{where}: the factory returned None; it must return the extension object",
            )
    else:
        if settings:
            return Built(
                "failed",
                f"{where} names a ready object ({type(target).__name__}), which takes no "
                f"settings; remove [extensions.{candidate.name}] from {config_file} or point "
                f"the entry point at a class or factory function",
            )
        extension = target
    try:
        impls = collect_impls(extension, candidate.name)
    except RegistrationError as exc:
        return Built("invalid", f"{where}: {exc}", exception=exc)
    found = {impl.hook for impl in impls}
    hooks = tuple(hook for hook in hookspecs.HOOK_NAMES if hook in found)
    return Built("loaded", hooks=hooks, extension=extension)
