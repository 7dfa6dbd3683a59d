"""The ``dispatch-ext`` command line."""

from __future__ import annotations

from . import demo as _demo  # noqa: F401  (registers demo)
from . import engine as _engine  # noqa: F401  (registers run, dlq)
from . import extensions as _extensions  # noqa: F401  (registers list, hooks, check, info)
from . import scaffold as _scaffold  # noqa: F401  (registers new)
from .app import main

__all__ = ["main"]
