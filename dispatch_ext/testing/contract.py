"""The contract check: does an extension fit the hook specifications?"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import Any

from .. import interfaces
from .._validation import HOOK_ARGS, collect_impls
from ..errors import RegistrationError
from ..hookspecs import HOOK_NAMES
from ..registry import Registry

__all__ = ["assert_valid_extension", "check_extension"]


def _protocols() -> dict[type, str]:
    """Each protocol of :mod:`dispatch_ext.interfaces` and the hook it stands for."""
    found: dict[type, str] = {}
    for attribute in interfaces.__all__:
        protocol = getattr(interfaces, attribute)
        hooks = [name for name in HOOK_NAMES if name in vars(protocol)]
        if len(hooks) == 1:
            found[protocol] = hooks[0]
    return found


def check_extension(ext: object, name: str | None = None, *, protocols: bool = True) -> list[str]:
    """Check ``ext`` against the hook specifications; return the problems found.

    An empty list means a registry accepts the extension and every implementation will
    run. Checked, without calling any hook:

    - every public ``on_*`` method (and every method marked with
      :data:`~dispatch_ext.hookimpl`) names a hook; a near miss suggests the right name;
    - each implementation takes only arguments its hook provides, by name;
    - each implementation is a plain or ``async`` function: a generator function would
      return a generator whose body never runs;
    - ``hook_timeout``, when set, is a positive number of seconds;
    - it implements at least one hook;
    - with ``protocols=True``, every protocol of :mod:`dispatch_ext.interfaces` the class
      declares is implemented by the class itself, not left to the protocol's empty stub;
    - a fresh :class:`~dispatch_ext.Registry` registers it.

    Args:
        ext: The extension object (an instance, not its class).
        name: The name to check it under; defaults to ``ext.name``, else the class name.
        protocols: Also check the declared :mod:`~dispatch_ext.interfaces` protocols.
    """
    if isinstance(ext, type):
        return [
            f"{ext.__qualname__} is a class; pass an instance: registries register objects "
            f"(discovery calls a class named by an entry point to build one)"
        ]
    ext_name = _name_of(ext, name)
    problems: list[str] = []
    try:
        impls = {
            spec.hook: (spec.attribute, spec.function) for spec in collect_impls(ext, ext_name)
        }
    except RegistrationError as exc:
        problems.extend(_split_problems(str(exc), ext_name))
        impls = _named_like_hooks(ext)
    for hook, (attribute, function) in impls.items():
        problems.extend(_shape_problems(ext_name, hook, attribute, function))
    timeout = getattr(ext, "hook_timeout", None)
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0
    ):
        problems.append(
            f"extension {ext_name!r}: hook_timeout is {timeout!r}; set it to a positive "
            f"number of seconds, or leave it out for the registry's default"
        )
    if protocols:
        problems.extend(_protocol_problems(ext, ext_name))
    if not impls and not problems:
        problems.append(
            f"extension {ext_name!r} implements no hook; define a method named like one of: "
            f"{', '.join(HOOK_NAMES)}"
        )
    if not problems:
        problems.extend(_registration_problems(ext, ext_name))
    return problems


def assert_valid_extension(ext: object, name: str | None = None, *, protocols: bool = True) -> None:
    """Fail with every problem :func:`check_extension` finds, one per line.

    Raises:
        AssertionError: The extension does not fit the hook specifications.
    """
    __tracebackhide__ = True  # pytest shows the caller's line, not this one
    problems = check_extension(ext, name, protocols=protocols)
    if problems:
        listed = "\n".join(f"  - {problem}" for problem in problems)
        raise AssertionError(
            f"{_name_of(ext, name)!r} is not a valid dispatch-ext extension:\n{listed}"
        )


def _name_of(ext: object, name: str | None) -> str:
    if name:
        return name
    attribute = getattr(ext, "name", None)
    if isinstance(attribute, str) and attribute:
        return attribute
    return getattr(ext, "__name__", None) or type(ext).__name__


def _split_problems(message: str, ext_name: str) -> list[str]:
    # collect_impls joins its findings with "; ", and each one starts with the extension.
    return re.split(r"; (?=extension " + re.escape(repr(ext_name)) + ")", message)


def _named_like_hooks(ext: object) -> dict[str, tuple[str, Callable[..., Any]]]:
    found: dict[str, tuple[str, Callable[..., Any]]] = {}
    for hook in HOOK_NAMES:
        try:
            raw = inspect.getattr_static(ext, hook)
        except AttributeError:
            continue
        if isinstance(raw, property):
            continue
        function = getattr(ext, hook, None)
        if callable(function):
            found[hook] = (hook, function)
    return found


def _shape_problems(
    ext_name: str, hook: str, attribute: str, function: Callable[..., Any]
) -> list[str]:
    target = inspect.unwrap(getattr(function, "__func__", function))
    where = f"extension {ext_name!r}: {attribute}"
    if inspect.isasyncgenfunction(target):
        return [
            f"{where} is an async generator function; a hook must be a plain or async "
            f"function (remove the yield)"
        ]
    if inspect.isgeneratorfunction(target):
        return [
            f"{where} is a generator function: calling it returns a generator and its body "
            f"never runs; remove the yield"
        ]
    return []


def _protocol_problems(ext: object, ext_name: str) -> list[str]:
    problems: list[str] = []
    mro = type(ext).__mro__
    protocols = _protocols()
    for protocol, hook in protocols.items():
        if protocol not in mro:
            continue
        owner = next(cls for cls in mro if hook in vars(cls))
        if owner in protocols:
            params = ", ".join(HOOK_ARGS[hook])
            problems.append(
                f"extension {ext_name!r} declares {protocol.__name__} but does not define "
                f"{hook}; without it the protocol's empty stub would be registered: add "
                f"def {hook}(self{', ' if params else ''}{params})"
            )
    return problems


def _registration_problems(ext: object, ext_name: str) -> list[str]:
    registry = Registry(strict=True)
    try:
        registry.register(ext, ext_name)
    except RegistrationError as exc:
        return [str(exc)]
    finally:
        registry.close()
    return []
