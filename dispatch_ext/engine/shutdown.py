"""Blocking use: run an engine until SIGINT or SIGTERM, then shut down gracefully."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["serve"]

logger = logging.getLogger("dispatch_ext.engine")

_SIGNALS = tuple(
    sig for sig in (getattr(signal, "SIGINT", None), getattr(signal, "SIGTERM", None)) if sig
)


def serve(
    engine: Engine,
    shutdown_timeout: float | None = None,
    on_started: Callable[[], None] | None = None,
) -> None:
    """Run ``engine`` until a signal; a second signal cuts the shutdown short.

    ``on_started`` is called once the engine has started (not when starting failed).
    Handler threads still running when the shutdown ends are not waited for: they are
    daemon threads and end with the process.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        raise RuntimeError(
            "engine.run() blocks and needs its own event loop; from async code use "
            "'async with engine:' instead"
        )
    asyncio.run(_serve(engine, shutdown_timeout, on_started))


async def _serve(
    engine: Engine, shutdown_timeout: float | None, on_started: Callable[[], None] | None
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    stopping: asyncio.Task[None] | None = None
    signals_seen = 0

    def on_signal(sig: signal.Signals) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            logger.warning("%s received: shutting down gracefully (again to hurry)", sig.name)
            stop.set()
        elif stopping is not None:
            logger.warning("%s received again: not waiting for running jobs", sig.name)
            engine._hurry()

    installed: list[signal.Signals] = []
    for sig in _SIGNALS:
        try:
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - Windows
            signal.signal(sig, lambda s, f: loop.call_soon_threadsafe(on_signal, signal.Signals(s)))
    try:
        await engine.start()
        if on_started is not None:
            on_started()
        await stop.wait()
        stopping = asyncio.create_task(engine.stop(shutdown_timeout))
        await stopping
    finally:
        if stopping is None and engine.running:
            await engine.stop(shutdown_timeout)
        for sig in installed:
            loop.remove_signal_handler(sig)
