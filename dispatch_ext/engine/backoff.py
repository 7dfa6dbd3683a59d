"""Retry delays: a backoff is any callable ``attempt -> seconds`` (``attempt`` is 1-based).

``@engine.job(..., backoff=...)`` also takes a plain number of seconds (a constant delay).
The default is :func:`jittered` from 1 s up to 60 s.
"""

from __future__ import annotations

import random
from collections.abc import Callable

__all__ = [
    "Backoff",
    "constant",
    "default",
    "exponential",
    "jittered",
    "linear",
    "resolve",
]

Backoff = Callable[[int], float]
"""Seconds to wait before retry number ``attempt`` (1-based)."""


def _non_negative(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError(f"backoff {name} must be a number of seconds >= 0, got {value!r}")
    return float(value)


def constant(seconds: float) -> Backoff:
    """The same delay before every retry."""
    delay = _non_negative("seconds", seconds)

    def constant_backoff(attempt: int) -> float:
        return delay

    return constant_backoff


def linear(step: float = 1.0, *, start: float | None = None, maximum: float = 60.0) -> Backoff:
    """``start + step * (attempt - 1)`` seconds (``start`` defaults to ``step``), capped."""
    step = _non_negative("step", step)
    first = step if start is None else _non_negative("start", start)
    cap = _non_negative("maximum", maximum)

    def linear_backoff(attempt: int) -> float:
        return min(cap, first + step * (attempt - 1))

    return linear_backoff


def exponential(base: float = 1.0, *, factor: float = 2.0, maximum: float = 60.0) -> Backoff:
    """``base * factor ** (attempt - 1)`` seconds, capped at ``maximum``."""
    base = _non_negative("base", base)
    factor = _non_negative("factor", factor)
    cap = _non_negative("maximum", maximum)

    def exponential_backoff(attempt: int) -> float:
        try:
            return float(min(cap, base * factor ** (attempt - 1)))
        except OverflowError:
            return cap

    return exponential_backoff


def jittered(base: float = 1.0, *, factor: float = 2.0, maximum: float = 60.0) -> Backoff:
    """Exponential with jitter: a random delay between half the exponential delay and the
    full one, never below ``base`` nor above ``maximum``.

    Jitter spreads the retries of jobs that failed together (a broken downstream service)
    so that they do not all come back at the same instant.
    """
    grow = exponential(base, factor=factor, maximum=maximum)
    floor = min(base, maximum)

    def jittered_backoff(attempt: int) -> float:
        ceiling = grow(attempt)
        return random.uniform(max(floor, ceiling / 2), ceiling)

    return jittered_backoff


def default() -> Backoff:
    """The default backoff: :func:`jittered` from 1 s to 60 s."""
    return jittered(1.0, maximum=60.0)


def resolve(backoff: float | Backoff | None, job_name: str) -> Backoff:
    """Turn what ``@engine.job(backoff=...)`` accepts into a callable."""
    if backoff is None:
        return default()
    if callable(backoff):
        return backoff
    if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or backoff < 0:
        raise ValueError(
            f"job {job_name!r}: backoff must be seconds >= 0 or a callable attempt -> seconds "
            f"(see dispatch_ext.engine.backoff), got {backoff!r}"
        )
    return constant(float(backoff))
