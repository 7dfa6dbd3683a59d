"""dispatch-ext: lifecycle extensions for job dispatchers.

Importing this package has no side effects: nothing scans entry points or imports
extensions until :func:`discover` or :meth:`Registry.load_entrypoints` is called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    ConfigError,
    DispatchExtError,
    ExtensionLoadError,
    HookTimeoutError,
    RegistrationError,
    UnknownHookError,
)
from .hookspecs import HOOK_NAMES
from .markers import hookimpl, hookspec
from .models import CronEntry, Job, JobState, RunState, WorkflowRun
from .registry import HookStats, Registry

if TYPE_CHECKING:
    from .discovery import ExtensionRecord, discover

__version__ = "0.1.0"

__all__ = [
    "HOOK_NAMES",
    "ConfigError",
    "CronEntry",
    "DispatchExtError",
    "ExtensionLoadError",
    "ExtensionRecord",
    "HookStats",
    "HookTimeoutError",
    "Job",
    "JobState",
    "RegistrationError",
    "Registry",
    "RunState",
    "UnknownHookError",
    "WorkflowRun",
    "__version__",
    "discover",
    "hookimpl",
    "hookspec",
]


def __getattr__(name: str) -> Any:
    # Discovery pulls in importlib.metadata; load it only when asked for.
    if name in {"discover", "ExtensionRecord"}:
        from . import discovery

        return getattr(discovery, name)
    raise AttributeError(f"module 'dispatch_ext' has no attribute {name!r}")
