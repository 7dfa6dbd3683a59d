"""Errors raised by the embedded engine."""

from __future__ import annotations

from ..errors import DispatchExtError

__all__ = [
    "CronScheduleError",
    "DeadLetterError",
    "EngineError",
    "JobTimeoutError",
    "NotAStoreError",
    "PayloadError",
    "StoreError",
    "UnknownJobError",
    "UnknownWorkflowError",
]


class EngineError(DispatchExtError):
    """Base class of the errors the embedded engine raises on purpose."""


class UnknownJobError(EngineError, LookupError):
    """A job name that no ``@engine.job`` handler is registered for."""


class UnknownWorkflowError(EngineError, LookupError):
    """A workflow name that no ``@engine.workflow`` function is registered for."""


class PayloadError(EngineError, TypeError):
    """A payload, step result or workflow output that is not JSON-serialisable."""


class CronScheduleError(EngineError, ValueError):
    """A malformed cron expression; the message names the entry and the field."""


class JobTimeoutError(EngineError, TimeoutError):
    """A job attempt ran longer than its ``timeout``; the attempt counts as failed."""


class DeadLetterError(EngineError, LookupError):
    """A dead-letter entry that does not exist or cannot be replayed."""


class StoreError(EngineError, OSError):
    """The store's file cannot be opened or used (missing folder, not a database, ...)."""


class NotAStoreError(StoreError):
    """A SQLite file that is not a dispatch-ext store (it has no ``meta`` table).

    The engine refuses to add its tables to somebody else's database, and the commands
    that read a store refuse to look into it.
    """

    def __init__(self, message: str, path: str) -> None:
        super().__init__(message)
        self.path = path
