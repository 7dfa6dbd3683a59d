"""Daemon threads that run sync handlers and steps for the event loop.

A lighter cousin of ``loop.run_in_executor``: results come back with one
``call_soon_threadsafe`` and the threads are daemons, so a handler stuck past its timeout
cannot keep the process from exiting. A thread given up on (:meth:`ThreadRunner.abandon`)
no longer counts against the pool, so a stuck handler does not take a worker slot away.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any

__all__ = ["ThreadRunner"]

_STOP: Any = object()


class ThreadRunner:
    """Runs callables on up to ``size`` daemon threads, started on demand."""

    def __init__(self, size: int, name: str = "dispatch-worker") -> None:
        self.size = size
        self._name = name
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0
        self._abandoned = 0
        self._count = 0
        self._given_up: set[asyncio.Future[Any]] = set()

    def submit(
        self, loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any
    ) -> asyncio.Future[Any]:
        """Run ``fn(*args)`` on a thread; the future resolves on ``loop``."""
        future = loop.create_future()
        with self._lock:
            if self._idle:
                self._idle -= 1
            elif self._threads < self.size + self._abandoned:
                self._threads += 1
                self._count += 1
                threading.Thread(
                    target=self._serve, name=f"{self._name}-{self._count}", daemon=True
                ).start()
        self._queue.put((loop, future, fn, args))
        return future

    def abandon(self, future: asyncio.Future[Any]) -> None:
        """The call behind ``future`` is stuck (timed out): allow one more thread meanwhile.

        The stuck thread exits once its call returns.
        """
        with self._lock:
            if future not in self._given_up:
                self._given_up.add(future)
                self._abandoned += 1

    def _serve(self) -> None:
        get = self._queue.get
        while True:
            item = get()
            if item is _STOP:
                return
            loop, future, fn, args = item
            try:
                result = fn(*args)
            except BaseException as exc:
                _deliver(loop, future, _set_exception, exc)
            else:
                _deliver(loop, future, _set_result, result)
            with self._lock:
                if future in self._given_up:  # a stuck call came back: its stand-in stays
                    self._given_up.discard(future)
                    self._abandoned -= 1
                    self._threads -= 1
                    return
                self._idle += 1
            del item, loop, future, fn, args

    def shutdown(self) -> None:
        """Ask idle threads to exit (busy ones exit when done; all are daemons)."""
        with self._lock:
            count, self._threads, self._idle = self._threads, 0, 0
        for _ in range(count):
            self._queue.put(_STOP)


def _deliver(
    loop: asyncio.AbstractEventLoop,
    future: asyncio.Future[Any],
    setter: Callable[[asyncio.Future[Any], Any], None],
    value: Any,
) -> None:
    with contextlib.suppress(RuntimeError):  # a closed loop: nobody waits any more
        loop.call_soon_threadsafe(setter, future, value)


def _set_result(future: asyncio.Future[Any], result: Any) -> None:
    if not future.done():
        future.set_result(result)


def _set_exception(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)
