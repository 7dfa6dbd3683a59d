"""The embedded engine: the default host for extensions, with nothing else to install.

.. code-block:: python

    from dispatch_ext.engine import Engine

    engine = Engine()                      # SQLite file dispatch.sqlite3, extensions discovered

    @engine.job("send_email", max_retries=5)
    async def send_email(payload):
        ...

    async def main():
        async with engine:
            await engine.enqueue("send_email", {"to": "ada@example.com"})
            await engine.drain()
"""

from __future__ import annotations

from . import backoff
from .dlq import DeadLetterQueue
from .engine import Engine
from .errors import (
    CronScheduleError,
    DeadLetterError,
    EngineError,
    JobTimeoutError,
    NotAStoreError,
    PayloadError,
    StoreError,
    UnknownJobError,
    UnknownWorkflowError,
)
from .jobs import JobSpec
from .records import DeadLetter
from .settings import EngineSettings
from .store import Store
from .store_memory import MemoryStore
from .store_sqlite import DEFAULT_DATABASE, SQLiteStore
from .workflow import WorkflowContext, WorkflowInterrupted

__all__ = [
    "DEFAULT_DATABASE",
    "CronScheduleError",
    "DeadLetter",
    "DeadLetterError",
    "DeadLetterQueue",
    "Engine",
    "EngineError",
    "EngineSettings",
    "JobSpec",
    "JobTimeoutError",
    "MemoryStore",
    "NotAStoreError",
    "PayloadError",
    "SQLiteStore",
    "Store",
    "StoreError",
    "UnknownJobError",
    "UnknownWorkflowError",
    "WorkflowContext",
    "WorkflowInterrupted",
    "backoff",
]
