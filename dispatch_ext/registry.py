"""The registry: holds extensions and fans each hook call out to its implementations."""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import pluggy

from . import hookspecs
from ._loop import LoopThread, await_with_timeout
from ._validation import ImplSpec, collect_impls, unknown_hook_message
from .errors import HookTimeoutError, RegistrationError, UnknownHookError
from .markers import PROJECT_NAME

if sys.version_info >= (3, 11):
    from builtins import ExceptionGroup
else:  # pragma: no cover - exercised on Python 3.10 only
    from exceptiongroup import ExceptionGroup

__all__ = ["DEFAULT_HOOK_TIMEOUT", "HookStats", "Registry"]

logger = logging.getLogger("dispatch_ext")

DEFAULT_HOOK_TIMEOUT = 5.0
"""Seconds an async implementation may take before it is cut off."""

_TRUTHY = frozenset({"1", "true", "yes", "on"})
_SAMPLE_MASK = 63  # time one emit in 64; the others run untimed


@dataclass(frozen=True)
class HookStats:
    """What one extension's implementation of one hook has done so far.

    ``seconds`` is estimated from a sample of timed calls (one emit in 64, the first
    included), so that timing costs nothing on most calls.
    """

    calls: int
    errors: int
    timeouts: int
    seconds: float


class _Impl:
    """One registered implementation: the callables for emit/aemit and its counters."""

    __slots__ = (
        "acall",
        "base",
        "call",
        "errors",
        "ext_name",
        "final_calls",
        "hook",
        "sampled_calls",
        "sampled_seconds",
        "seq",
        "spec",
        "timeout",
        "timeouts",
    )

    def __init__(self, ext_name: str, spec: ImplSpec, timeout: float, seq: int) -> None:
        self.ext_name = ext_name
        self.hook = spec.hook
        self.spec = spec
        self.timeout = timeout
        self.seq = seq
        self.acall: Callable[..., Any] = _bind_args(spec.function, spec.argnames)
        self.call: Callable[..., Any] = self.acall
        self.base = 0
        self.final_calls: int | None = None
        self.errors = 0
        self.timeouts = 0
        self.sampled_calls = 0
        self.sampled_seconds = 0.0

    @property
    def order(self) -> tuple[int, int]:
        return (0 if self.spec.tryfirst else 2 if self.spec.trylast else 1, self.seq)


def _bind_args(
    function: Callable[..., Any], argnames: tuple[str, ...] | None
) -> Callable[..., Any]:
    """A callable taking all of a hook's keyword arguments and passing on the wanted ones."""
    if argnames is None:
        return function
    if not argnames:
        return lambda **_: function()

    def call_with_subset(**kwargs: Any) -> Any:
        return function(**{name: kwargs[name] for name in argnames})

    return call_with_subset


class _Dispatch:
    """The precomputed call list of one hook."""

    __slots__ = ("calls", "emits", "hook", "impls")

    def __init__(self, hook: str) -> None:
        self.hook = hook
        self.impls: tuple[_Impl, ...] = ()
        self.calls: tuple[tuple[Callable[..., Any], _Impl], ...] = ()
        self.emits = 0


@dataclass
class _Entry:
    name: str
    ext: object
    impls: list[_Impl]


class _PluginManager(pluggy.PluginManager):
    """pluggy's manager, taught that a method named like a hook is an implementation."""

    def __init__(self) -> None:
        super().__init__(PROJECT_NAME)
        self.accepted: dict[int, dict[str, dict[str, Any]]] = {}

    def parse_hookimpl_opts(self, plugin: object, name: str) -> Any:
        return self.accepted.get(id(plugin), {}).get(name)


class Registry:
    """Holds extensions and calls their hook implementations.

    Creating a registry has no side effects (nothing is scanned or imported); fill it with
    :meth:`register` or :meth:`load_entrypoints`.

    Args:
        strict: Raise an ``ExceptionGroup`` after all implementations of a hook ran when
            any of them failed. ``None`` reads ``DISPATCH_EXT_STRICT``.
        timeout: Default seconds an async implementation may take.
    """

    def __init__(
        self, *, strict: bool | None = None, timeout: float = DEFAULT_HOOK_TIMEOUT
    ) -> None:
        if strict is None:
            strict = os.environ.get("DISPATCH_EXT_STRICT", "").strip().lower() in _TRUTHY
        self.strict = strict
        self.default_timeout = timeout
        self._lock = threading.RLock()
        self._entries: dict[str, _Entry] = {}
        self._seq = 0
        self._dispatch = {name: _Dispatch(name) for name in hookspecs.HOOK_NAMES}
        # Each hook's call list, also held here so that an emit nobody listens to costs
        # one dict lookup.
        self._calls: dict[str, tuple[tuple[Callable[..., Any], _Impl], ...]] = dict.fromkeys(
            hookspecs.HOOK_NAMES, ()
        )
        self._async_hooks: frozenset[str] = frozenset()  # hooks with an async implementation
        self._retired: list[_Impl] = []
        self._loop = LoopThread()
        self._pm = _PluginManager()
        self._pm.add_hookspecs(hookspecs)
        self.records: list[Any] = []
        """Discovery records of the last :meth:`load_entrypoints` (see :func:`discover`)."""

    # -- registration -------------------------------------------------------------------

    def register(
        self, ext: object, name: str | None = None, *, timeout: float | None = None
    ) -> str:
        """Register ``ext`` and return the name it is registered under.

        Everything is validated before anything is registered: an unknown ``on_*`` method
        (with the closest hook suggested) or an argument a hook lacks raises
        :class:`~dispatch_ext.errors.RegistrationError` and leaves no trace. Registering
        the same object again is a no-op; a different object under a taken name is an
        error.

        Args:
            ext: Any object; its methods named like hooks (or marked with
                :data:`~dispatch_ext.hookimpl`) are its implementations.
            name: Defaults to ``ext.name``, else the class (or module) name.
            timeout: Seconds each async implementation may take; defaults to
                ``ext.hook_timeout``, else the registry's default.
        """
        with self._lock:
            for entry in self._entries.values():
                if entry.ext is ext:
                    return entry.name
            name = _extension_name(ext, name)
            taken = self._entries.get(name)
            if taken is not None:
                raise RegistrationError(
                    f"extension name {name!r} is already taken by "
                    f"{type(taken.ext).__qualname__}; pick another name or unregister "
                    f"{name!r} first"
                )
            specs = collect_impls(ext, name)
            if timeout is None:
                timeout = (
                    _positive_float(getattr(ext, "hook_timeout", None)) or self.default_timeout
                )
            impls = []
            for spec in specs:
                self._seq += 1
                impls.append(_Impl(name, spec, timeout, self._seq))
            for impl in impls:
                if impl.spec.is_async:
                    impl.call = self._sync_runner(impl)
            self._pm.accepted[id(ext)] = {
                s.attribute: {"tryfirst": s.tryfirst, "trylast": s.trylast, "specname": s.hook}
                for s in specs
            }
            try:
                self._pm.register(ext, name)
            except Exception as exc:  # pluggy's own check disagrees: refuse, leave no trace
                self._pm.accepted.pop(id(ext), None)
                raise RegistrationError(f"extension {name!r}: {exc}") from exc
            self._entries[name] = _Entry(name, ext, impls)
            self._rebuild({impl.hook for impl in impls}, added=impls)
            return name

    def unregister(self, name: str) -> object:
        """Remove the extension registered as ``name`` (from the next emit) and return it."""
        with self._lock:
            entry = self._entries.pop(name, None)
            if entry is None:
                raise KeyError(f"no extension named {name!r} is registered")
            for impl in entry.impls:
                impl.final_calls = self._dispatch[impl.hook].emits - impl.base
            self._retired.extend(entry.impls)
            self._pm.unregister(entry.ext)
            self._pm.accepted.pop(id(entry.ext), None)
            self._rebuild({impl.hook for impl in entry.impls})
            return entry.ext

    def _rebuild(self, hooks: Iterable[str], added: Iterable[_Impl] = ()) -> None:
        for impl in added:
            impl.base = self._dispatch[impl.hook].emits
        for hook in hooks:
            dispatch = self._dispatch[hook]
            impls = sorted(
                (i for e in self._entries.values() for i in e.impls if i.hook == hook),
                key=lambda i: i.order,
            )
            dispatch.impls = tuple(impls)
            dispatch.calls = self._calls[hook] = tuple((i.call, i) for i in impls)
        self._async_hooks = frozenset(
            name for name, d in self._dispatch.items() if any(i.spec.is_async for i in d.impls)
        )

    def _sync_runner(self, impl: _Impl) -> Callable[..., Any]:
        run, acall, timeout = self._loop.run, impl.acall, impl.timeout

        def run_to_completion(**kwargs: Any) -> Any:
            return run(acall(**kwargs), timeout)

        return run_to_completion

    # -- calling ------------------------------------------------------------------------

    def emit(self, hook: str, /, **kwargs: Any) -> None:
        """Call every implementation of ``hook`` in order, synchronously.

        Async implementations run to completion on the registry's event-loop thread,
        each under its timeout. A failing implementation is logged and counted and the
        others still run; in strict mode the failures are raised afterwards as an
        ``ExceptionGroup``.
        """
        try:
            calls = self._calls[hook]
        except (KeyError, TypeError):
            raise UnknownHookError(unknown_hook_message(str(hook))) from None
        if not calls:
            return
        dispatch = self._dispatch[hook]
        count = dispatch.emits = dispatch.emits + 1
        if count & _SAMPLE_MASK == 1:
            return self._emit_timed(hook, calls, kwargs)
        failures: list[BaseException] | None = None
        for call, impl in calls:
            try:
                call(**kwargs)
            except Exception as exc:
                failures = self._failed(impl, exc, failures)
        if failures:
            self._raise_group(hook, failures)

    def _emit_timed(
        self, hook: str, calls: tuple[tuple[Callable[..., Any], _Impl], ...], kwargs: dict[str, Any]
    ) -> None:
        failures: list[BaseException] | None = None
        clock = time.perf_counter
        for call, impl in calls:
            started = clock()
            try:
                call(**kwargs)
            except Exception as exc:
                failures = self._failed(impl, exc, failures)
            impl.sampled_seconds += clock() - started
            impl.sampled_calls += 1
        if failures:
            self._raise_group(hook, failures)

    async def aemit(self, hook: str, /, **kwargs: Any) -> None:
        """Like :meth:`emit`, from async code: async implementations are awaited in order."""
        try:
            dispatch = self._dispatch[hook]
        except (KeyError, TypeError):
            raise UnknownHookError(unknown_hook_message(str(hook))) from None
        calls = dispatch.calls
        if not calls:
            return
        count = dispatch.emits = dispatch.emits + 1
        timed = count & _SAMPLE_MASK == 1
        clock = time.perf_counter
        failures: list[BaseException] | None = None
        for _, impl in calls:
            started = clock() if timed else 0.0
            try:
                if impl.spec.is_async:
                    await await_with_timeout(impl.acall(**kwargs), impl.timeout)
                else:
                    impl.acall(**kwargs)
            except Exception as exc:
                failures = self._failed(impl, exc, failures)
            if timed:
                impl.sampled_seconds += clock() - started
                impl.sampled_calls += 1
        if failures:
            self._raise_group(hook, failures)

    def has_listeners(self, hook: str) -> bool:
        """Whether any extension implements ``hook`` (build no snapshot when none does)."""
        return bool(self._calls[hook])

    def has_async_listeners(self, hook: str) -> bool:
        """Whether any implementation of ``hook`` is ``async def``.

        When none is, :meth:`emit` does from async code exactly what ``await``
        :meth:`aemit` does (same order, isolation, strict mode and stats), without a
        coroutine: a cheaper call for a caller emitting many events.
        """
        if hook in self._async_hooks:
            return True
        if hook not in self._calls:
            raise UnknownHookError(unknown_hook_message(str(hook)))
        return False

    def _failed(
        self, impl: _Impl, exc: Exception, failures: list[BaseException] | None
    ) -> list[BaseException] | None:
        impl.errors += 1
        if isinstance(exc, HookTimeoutError):
            impl.timeouts += 1
            logger.error("extension %r timed out in %s: %s", impl.ext_name, impl.hook, exc)
        else:
            logger.error(
                "extension %r raised in %s: %s: %s",
                impl.ext_name,
                impl.hook,
                type(exc).__name__,
                exc,
                exc_info=exc,
            )
        if not self.strict:
            return failures
        note = f"in extension {impl.ext_name!r}, hook {impl.hook}"
        if hasattr(exc, "add_note"):
            exc.add_note(note)
        else:  # Python 3.10: set the attribute the exceptiongroup backport prints
            setattr(exc, "__notes__", [*getattr(exc, "__notes__", ()), note])  # noqa: B010
        return [*(failures or ()), exc]

    def _raise_group(self, hook: str, failures: list[BaseException]) -> None:
        names = ", ".join(sorted({str(getattr(f, "__notes__", [""])[-1]) for f in failures}))
        raise ExceptionGroup(f"{len(failures)} extension(s) failed in {hook}: {names}", failures)  # type: ignore[type-var]

    # -- introspection ------------------------------------------------------------------

    def extensions(self) -> list[tuple[str, object]]:
        """``(name, extension)`` pairs in registration order."""
        with self._lock:
            return [(e.name, e.ext) for e in self._entries.values()]

    def get(self, name: str) -> object | None:
        """The extension registered as ``name``, or ``None``."""
        entry = self._entries.get(name)
        return None if entry is None else entry.ext

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def implementers(self, hook: str) -> list[str]:
        """Names of the extensions implementing ``hook``, in call order."""
        if hook not in self._dispatch:
            raise UnknownHookError(unknown_hook_message(hook))
        return [impl.ext_name for impl in self._dispatch[hook].impls]

    def hooks_of(self, name: str) -> list[str]:
        """The hooks the extension ``name`` implements, in reference order."""
        entry = self._entries[name]
        found = {impl.hook for impl in entry.impls}
        return [h for h in hookspecs.HOOK_NAMES if h in found]

    def stats(self) -> dict[str, dict[str, HookStats]]:
        """Calls, errors, timeouts and estimated seconds per extension and hook."""
        with self._lock:
            result: dict[str, dict[str, HookStats]] = {}
            for impl in [*self._retired, *(i for e in self._entries.values() for i in e.impls)]:
                calls = impl.final_calls
                if calls is None:
                    calls = self._dispatch[impl.hook].emits - impl.base
                mean = impl.sampled_seconds / impl.sampled_calls if impl.sampled_calls else 0.0
                previous = result.setdefault(impl.ext_name, {}).get(impl.hook)
                current = HookStats(calls, impl.errors, impl.timeouts, mean * calls)
                if previous is not None:
                    current = HookStats(
                        previous.calls + current.calls,
                        previous.errors + current.errors,
                        previous.timeouts + current.timeouts,
                        previous.seconds + current.seconds,
                    )
                result[impl.ext_name][impl.hook] = current
            return result

    @property
    def plugin_manager(self) -> pluggy.PluginManager:
        """The pluggy manager holding the same extensions, for introspection.

        Call hooks through :meth:`emit` / :meth:`aemit`: pluggy's own hook call runs
        implementations in reverse order, stops at the first exception and does not
        await async implementations.
        """
        return self._pm

    # -- discovery ----------------------------------------------------------------------

    def load_entrypoints(self, config: Any = None) -> list[Any]:
        """Discover installed extensions and register the ones that load.

        Returns the discovery records (also kept in :attr:`records`); see
        :func:`dispatch_ext.discover`.
        """
        from .discovery import load_into

        self.records = load_into(self, config)
        return self.records

    def close(self) -> None:
        """Stop the event-loop thread used for async hooks (it restarts when needed)."""
        self._loop.close()


def _extension_name(ext: object, name: str | None) -> str:
    if name is None:
        attr = getattr(ext, "name", None)
        if isinstance(attr, str) and attr:
            name = attr
        else:
            name = getattr(ext, "__name__", None) or type(ext).__name__
    if not isinstance(name, str) or not name.strip():
        raise RegistrationError(f"extension {ext!r}: the name must be a non-empty string")
    return name


def _positive_float(value: object) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0:
        return float(value)
    return None
