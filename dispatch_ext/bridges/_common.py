"""What both bridges share: one registry per process, safe emits, timers and snapshots.

Nothing here imports Celery or Dramatiq.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ParamSpec

from ..models import Job, JobState, freeze
from ..registry import Registry

__all__ = [
    "UNLIMITED_RETRIES",
    "Once",
    "ProcessRegistry",
    "Timers",
    "from_millis",
    "guarded",
    "job_snapshot",
    "json_safe",
    "renew_lock_after_fork",
    "to_utc",
    "utc_now",
]

logger = logging.getLogger("dispatch_ext.bridges")

UNLIMITED_RETRIES = -1
"""``Job.max_retries`` of a task that retries forever (Celery's ``max_retries=None``)."""

_MAX_REMEMBERED = 10_000

_filled: weakref.WeakSet[Registry] = weakref.WeakSet()
"""Registries handed to a bridge that already hold its extensions."""

_locked: weakref.WeakSet[Any] = weakref.WeakSet()
"""Objects whose ``_lock`` a forked child must replace (another thread may hold it)."""


def _new_locks_in_child() -> None:
    for holder in list(_locked):
        holder._lock = threading.Lock()


def renew_lock_after_fork(holder: object) -> None:
    """Give ``holder._lock`` a fresh lock in a forked child (its parent's may be held)."""
    _locked.add(holder)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_locks_in_child)


P = ParamSpec("P")


def guarded(engine: str) -> Callable[[Callable[P, None]], Callable[P, None]]:
    """Wrap a signal handler or middleware hook so that it never raises into the engine.

    A bug in the bridge or in an extension must not change a task's outcome, so any
    exception (including a strict registry's ``ExceptionGroup``) is logged and dropped.
    """

    def decorate(handler: Callable[P, None]) -> Callable[P, None]:
        def run(*args: P.args, **kwargs: P.kwargs) -> None:
            try:
                handler(*args, **kwargs)
            except Exception:
                logger.exception(
                    "%s bridge: %s failed; the task is not affected", engine, handler.__name__
                )

        run.__name__ = handler.__name__
        run.__qualname__ = handler.__qualname__
        run.__doc__ = handler.__doc__
        return run

    return decorate


def utc_now() -> dt.datetime:
    """The current time, aware, in UTC."""
    return dt.datetime.now(dt.timezone.utc)


def to_utc(value: object) -> dt.datetime | None:
    """An aware UTC datetime from a datetime or an ISO 8601 string; naive means UTC."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, dt.datetime):
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.timezone.utc)
    return value.astimezone(dt.timezone.utc)


def from_millis(value: object) -> dt.datetime | None:
    """An aware UTC datetime from Unix milliseconds (Dramatiq's timestamps)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return dt.datetime.fromtimestamp(value / 1000, dt.timezone.utc)
    return None


def json_safe(value: Any, _depth: int = 0) -> Any:
    """A JSON-serialisable copy of ``value``: unknown objects become their ``repr``."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if _depth > 32:
        return repr(value)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v, _depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v, _depth + 1) for v in value]
    if isinstance(value, dt.datetime):
        return value.isoformat()
    return repr(value)


def job_snapshot(
    *,
    id: str,
    name: str,
    queue: str,
    args: Iterable[Any] | None,
    kwargs: Mapping[str, Any] | None,
    state: JobState,
    **fields: Any,
) -> Job:
    """A frozen :class:`~dispatch_ext.Job` with payload ``{"args": [...], "kwargs": {...}}``."""
    payload = {"args": json_safe(list(args or ())), "kwargs": json_safe(dict(kwargs or {}))}
    return Job(id=id, name=name, queue=queue, payload=freeze(payload), state=state, **fields)


class ProcessRegistry:
    """The registry of the current process, built the first time it is needed.

    Without an explicit ``registry``, every process gets its own: a forked child (a
    prefork pool process, a Dramatiq worker process) builds a fresh one instead of using
    the copy of its parent's, registering ``extensions`` and, with ``autoload``, the
    installed extensions (``Registry.load_entrypoints(config)``). An explicit
    ``registry`` is used as given in every process; ``extensions`` and discovery are
    added to it once.

    ``on_shutdown`` is emitted at most once per process, and only in a process that
    built (or was handed) its registry.
    """

    def __init__(
        self,
        *,
        registry: Registry | None = None,
        extensions: Iterable[object] = (),
        autoload: bool = True,
        config: Any = None,
        engine: str = "bridge",
    ) -> None:
        self._given = registry
        self._extensions = tuple(extensions)
        self._autoload = autoload
        self._config = config
        self._engine = engine
        self._lock = threading.Lock()
        _locked.add(self)
        self._registry: Registry | None = None
        self._pid: int | None = None
        self._shut_down_pid: int | None = None

    def get(self) -> Registry:
        """This process's registry, built (and filled) on first use."""
        registry, pid = self._registry, os.getpid()
        if registry is not None and self._pid == pid:
            return registry
        with self._lock:
            if self._registry is None or self._pid != pid:
                self._registry = self._build()
                self._pid = pid
            return self._registry

    def peek(self) -> Registry | None:
        """This process's registry if it was built here, else ``None`` (builds nothing)."""
        return self._registry if self._pid == os.getpid() else None

    def _build(self) -> Registry:
        if self._given is not None and self._given in _filled:
            return self._given
        registry = self._given if self._given is not None else Registry()
        for ext in self._extensions:
            try:
                registry.register(ext)
            except Exception:
                logger.exception(
                    "%s bridge: extension %r was refused; the others still run", self._engine, ext
                )
        if self._autoload:
            try:
                records = registry.load_entrypoints(self._config)
            except Exception:
                logger.exception(
                    "%s bridge: discovering extensions failed in process %d; the extensions "
                    "registered so far still run (see the error above to fix the others)",
                    self._engine,
                    os.getpid(),
                )
            else:
                loaded = [r.name for r in records if getattr(r, "status", "") == "loaded"]
                logger.info(
                    "%s bridge: process %d loaded extension(s): %s",
                    self._engine,
                    os.getpid(),
                    ", ".join(loaded) or "none",
                )
        if self._given is not None:
            _filled.add(self._given)
        return registry

    def emit(self, hook: str, build: Callable[[], Mapping[str, Any]]) -> None:
        """Emit ``hook`` with the arguments ``build()`` returns, if anything listens.

        Never raises: a fault while building the snapshot, or the ``ExceptionGroup`` of a
        strict registry, is logged so that the task's outcome stays what it was.
        """
        try:
            registry = self.get()
            if registry.has_listeners(hook):
                registry.emit(hook, **build())
        except Exception:
            logger.exception(
                "%s bridge: emitting %s failed; the task is not affected", self._engine, hook
            )

    def shutdown(self) -> None:
        """Emit ``on_shutdown`` once in this process, if this process holds extensions."""
        pid = os.getpid()
        with self._lock:
            registry = self._registry if self._pid == pid else None
            if registry is None or self._shut_down_pid == pid:
                return
            self._shut_down_pid = pid
        try:
            registry.emit("on_shutdown")
        except Exception:
            logger.exception("%s bridge: on_shutdown failed in process %d", self._engine, pid)
        if registry is not self._given:
            registry.close()


class Timers:
    """Start times keyed by job id, for the ``elapsed`` the engine does not provide."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        _locked.add(self)
        self._started: OrderedDict[str, tuple[float, dt.datetime]] = OrderedDict()

    def start(self, key: str) -> dt.datetime:
        """Note that ``key`` starts now; returns the wall-clock start (aware UTC)."""
        now = utc_now()
        with self._lock:
            self._started[key] = (time.monotonic(), now)
            self._started.move_to_end(key)
            while len(self._started) > _MAX_REMEMBERED:
                self._started.popitem(last=False)
        return now

    def started_at(self, key: str) -> dt.datetime | None:
        """When ``key`` started, if it was started in this process."""
        with self._lock:
            found = self._started.get(key)
        return None if found is None else found[1]

    def stop(self, key: str) -> tuple[dt.timedelta | None, dt.datetime | None]:
        """Forget ``key``; returns ``(elapsed, started_at)``, both ``None`` if unknown."""
        with self._lock:
            found = self._started.pop(key, None)
        if found is None:
            return None, None
        return dt.timedelta(seconds=time.monotonic() - found[0]), found[1]


class Once:
    """Remembers recent keys (bounded), so that a state change is reported only once."""

    def __init__(self, size: int = _MAX_REMEMBERED) -> None:
        self._lock = threading.Lock()
        _locked.add(self)
        self._seen: OrderedDict[object, None] = OrderedDict()
        self._size = size

    def first(self, key: object) -> bool:
        """``True`` the first time ``key`` is seen, ``False`` afterwards."""
        with self._lock:
            if key in self._seen:
                return False
            self._seen[key] = None
            if len(self._seen) > self._size:
                self._seen.popitem(last=False)
            return True

    def add(self, key: object) -> None:
        """Remember ``key``."""
        self.first(key)

    def pop(self, key: object) -> bool:
        """Forget ``key``; whether it was remembered."""
        with self._lock:
            return self._seen.pop(key, False) is None
