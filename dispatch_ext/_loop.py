"""A private event loop on a daemon thread, for running async hooks from sync code."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

from .errors import HookTimeoutError

T = TypeVar("T")


async def await_with_timeout(awaitable: Awaitable[T], timeout: float | None) -> T:
    """Await ``awaitable``; past ``timeout`` seconds cancel it and raise HookTimeoutError."""
    try:
        return await asyncio.wait_for(awaitable, timeout)
    except asyncio.TimeoutError as exc:
        raise HookTimeoutError(f"did not finish within {timeout:g} s") from exc


class LoopThread:
    """Starts its loop on first use; :meth:`close` stops it (a later use starts a new one)."""

    def __init__(self, name: str = "dispatch-ext-hooks") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _ensure(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is not None:
            return loop
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def serve() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                thread = threading.Thread(target=serve, name=self._name, daemon=True)
                thread.start()
                ready.wait()
                self._thread = thread
                self._loop = loop
            return self._loop

    def in_loop_thread(self) -> bool:
        return self._thread is not None and threading.current_thread() is self._thread

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
        """Run ``coro`` to completion on the loop thread and return its result."""
        if self.in_loop_thread():
            coro.close()
            raise RuntimeError(
                "emit() was called from inside an async hook; use 'await registry.aemit(...)'"
            )
        loop = self._ensure()
        future = asyncio.run_coroutine_threadsafe(await_with_timeout(coro, timeout), loop)
        grace = None if timeout is None else timeout + 1.0
        try:
            return future.result(grace)
        except concurrent.futures.TimeoutError as exc:
            future.cancel()
            raise HookTimeoutError(f"did not finish within {timeout:g} s") from exc

    def close(self) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        if not thread.is_alive():
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
