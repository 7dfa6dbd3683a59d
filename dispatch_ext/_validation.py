"""Finding and checking an extension's hook implementations before anything registers."""

from __future__ import annotations

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import hookspecs
from .errors import RegistrationError
from .markers import PROJECT_NAME

_IMPL_ATTR = PROJECT_NAME + "_impl"

HOOK_ARGS: dict[str, tuple[str, ...]] = {
    name: tuple(inspect.signature(getattr(hookspecs, name)).parameters)
    for name in hookspecs.HOOK_NAMES
}
"""Each hook's argument names, read from its specification."""


@dataclass(frozen=True)
class ImplSpec:
    """One validated hook implementation of one extension."""

    hook: str
    attribute: str
    function: Callable[..., Any]
    argnames: tuple[str, ...] | None  # None: accepts every argument of the hook
    is_async: bool
    tryfirst: bool = False
    trylast: bool = False


def suggest_hook(name: str) -> str | None:
    """The hook name closest to ``name``, if any is close."""
    matches = difflib.get_close_matches(name, hookspecs.HOOK_NAMES, n=1, cutoff=0.6)
    return matches[0] if matches else None


def unknown_hook_message(name: str) -> str:
    hint = suggest_hook(name)
    tail = (
        f"; did you mean {hint}?" if hint else f"; the hooks are: {', '.join(hookspecs.HOOK_NAMES)}"
    )
    return f"{name!r} is not a dispatch-ext hook{tail}"


def _marker(obj: object, attribute: str) -> dict[str, Any] | None:
    try:
        raw = inspect.getattr_static(obj, attribute)
    except AttributeError:
        return None
    raw = getattr(raw, "__func__", raw)  # staticmethod / classmethod
    opts = getattr(raw, _IMPL_ATTR, None)
    return opts if isinstance(opts, dict) else None


def _is_async(function: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(function):
        return True
    call = getattr(function, "__call__", None)  # noqa: B004 - async __call__ of callable objects
    return call is not None and inspect.iscoroutinefunction(call)


def _argnames(ext_name: str, hook: str, function: Callable[..., Any]) -> tuple[str, ...] | None:
    allowed = HOOK_ARGS[hook]
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return None
    names: list[str] = []
    takes_all = False
    for param in signature.parameters.values():
        if param.kind is param.VAR_KEYWORD:
            takes_all = True
        elif param.kind is param.VAR_POSITIONAL:
            continue
        elif param.kind is param.POSITIONAL_ONLY:
            if param.default is param.empty:
                raise RegistrationError(
                    f"extension {ext_name!r}: {hook} takes positional-only argument "
                    f"{param.name!r}; hooks pass arguments by name ({', '.join(allowed)})"
                )
        elif param.name in allowed:
            names.append(param.name)
        else:
            hint = difflib.get_close_matches(param.name, allowed, n=1)
            did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
            offered = ", ".join(allowed) if allowed else "no arguments"
            raise RegistrationError(
                f"extension {ext_name!r}: {hook} has argument {param.name!r}{did_you_mean}, "
                f"which the hook does not provide; it provides {offered}"
            )
    if takes_all or tuple(names) == allowed:
        return None
    return tuple(names)


def collect_impls(ext: object, ext_name: str) -> list[ImplSpec]:
    """Every hook implementation of ``ext``, validated; raises on the first problem.

    Looks at attributes without running descriptors (properties are never evaluated).
    """
    impls: list[ImplSpec] = []
    problems: list[str] = []
    seen: set[str] = set()
    for attribute in sorted(dir(ext)):
        if attribute.startswith("_"):
            continue
        opts = _marker(ext, attribute)
        if opts is None and not attribute.startswith("on_"):
            continue
        hook = (opts or {}).get("specname") or attribute
        if hook not in HOOK_ARGS:
            if opts is not None or _is_method_like(ext, attribute):
                problems.append(f"extension {ext_name!r}: {unknown_hook_message(hook)}")
            continue
        function = getattr(ext, attribute)
        if not callable(function):
            problems.append(
                f"extension {ext_name!r}: attribute {attribute!r} has a hook's name but is "
                f"not callable"
            )
            continue
        if hook in seen:
            problems.append(f"extension {ext_name!r}: implements {hook} twice")
            continue
        seen.add(hook)
        try:
            argnames = _argnames(ext_name, hook, function)
        except RegistrationError as exc:
            problems.append(str(exc))
            continue
        opts = opts or {}
        if opts.get("hookwrapper") or opts.get("wrapper"):
            problems.append(
                f"extension {ext_name!r}: {attribute} is marked as a wrapper; dispatch-ext "
                f"hooks are notifications and take no wrappers"
            )
            continue
        impls.append(
            ImplSpec(
                hook=hook,
                attribute=attribute,
                function=function,
                argnames=argnames,
                is_async=_is_async(function),
                tryfirst=bool(opts.get("tryfirst")),
                trylast=bool(opts.get("trylast")),
            )
        )
    if problems:
        raise RegistrationError("; ".join(problems))
    return impls


def _is_method_like(ext: object, attribute: str) -> bool:
    try:
        raw = inspect.getattr_static(ext, attribute)
    except AttributeError:
        return False
    return callable(raw) or isinstance(raw, (staticmethod, classmethod))
