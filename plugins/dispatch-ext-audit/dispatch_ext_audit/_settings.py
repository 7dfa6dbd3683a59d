"""Checking the audit extension's settings, so a wrong value is refused with a clear message.

The settings usually come from ``[extensions.audit]`` in ``dispatch.toml``; a wrong type
there would otherwise surface much later, deep inside the file sink. Each error names the
extension, the setting, the value given and what is expected.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

__all__ = ["check_settings"]


def _given(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _refuse(kind: type[Exception], setting: str, expected: str, value: Any) -> Exception:
    return kind(f"audit extension: setting {setting!r} must be {expected}, got {_given(value)}")


def check_settings(path: Any, logger: Any, flush_interval: Any, name: Any) -> None:
    """Raise ``TypeError`` (wrong type) or ``ValueError`` (bad value) for a wrong setting."""
    if path is not None:
        if not isinstance(path, (str, os.PathLike)):
            raise _refuse(TypeError, "path", "a file path (a string)", path)
        if not os.fspath(path).strip():
            raise _refuse(ValueError, "path", "a non-empty file path", path)
    if logger is not None:
        if not isinstance(logger, (str, logging.Logger)):
            raise _refuse(TypeError, "logger", "a logger name (a string) or a Logger", logger)
        if isinstance(logger, str) and not logger.strip():
            raise _refuse(ValueError, "logger", "a non-empty logger name", logger)
    if isinstance(flush_interval, bool) or not isinstance(flush_interval, (int, float)):
        raise _refuse(TypeError, "flush_interval", "a number of seconds (e.g. 1.0)", flush_interval)
    if not (math.isfinite(flush_interval) and flush_interval >= 0):
        raise _refuse(
            ValueError, "flush_interval", "a finite number of seconds >= 0", flush_interval
        )
    if not isinstance(name, str):
        raise _refuse(TypeError, "name", "a string", name)
    if not name.strip():
        raise _refuse(ValueError, "name", "a non-empty name", name)
