"""The engine's own settings: the ``[engine]`` table of ``dispatch.toml``.

.. code-block:: toml

    [engine]
    database = "dispatch.sqlite3"   # the SQLite file of the default store (relative: to the cwd)
    concurrency = 4                 # jobs run at once (Engine(concurrency=...) wins)
    shutdown_timeout = 30.0         # seconds running jobs get to finish on shutdown
    poll_interval = 1.0             # seconds between looks for work enqueued by other processes
    keep_completed = 86400.0        # seconds completed jobs stay in the store (0: forever)
    lease_timeout = 30.0            # seconds without a heartbeat before a worker counts as gone
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .lease import DEFAULT_LEASE_TIMEOUT
from .store_sqlite import DEFAULT_DATABASE

if TYPE_CHECKING:
    from ..config import Config

__all__ = ["EngineSettings", "resolve_config"]

_KEYS = (
    "database",
    "concurrency",
    "shutdown_timeout",
    "poll_interval",
    "keep_completed",
    "lease_timeout",
)
_SECONDS = ("shutdown_timeout", "poll_interval", "keep_completed", "lease_timeout")
_POSITIVE = ("poll_interval", "lease_timeout")  # zero would make no sense
DEFAULT_CONCURRENCY = 4


@dataclass(frozen=True)
class EngineSettings:
    """Settings read from ``[engine]`` (defaults when the table or a key is missing)."""

    database: Path = Path(DEFAULT_DATABASE)
    concurrency: int = DEFAULT_CONCURRENCY
    shutdown_timeout: float = 30.0
    poll_interval: float = 1.0
    keep_completed: float = 86400.0
    lease_timeout: float = DEFAULT_LEASE_TIMEOUT

    @classmethod
    def from_config(cls, config: Config | None) -> EngineSettings:
        raw: Mapping[str, Any] = {} if config is None else config.raw
        table = raw.get("engine", {})
        where = "[engine]" if config is None or config.path is None else f"{config.path}: [engine]"
        if not isinstance(table, Mapping):
            raise ConfigError(f"{where} must be a table, got {type(table).__name__}")
        unknown = [key for key in table if key not in _KEYS]
        if unknown:
            close = difflib.get_close_matches(unknown[0], _KEYS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else "."
            raise ConfigError(
                f"{where}: unknown key {unknown[0]!r}{hint} The known keys are: {', '.join(_KEYS)}."
            )
        values: dict[str, Any] = {}
        if "database" in table:
            database = table["database"]
            if not isinstance(database, str) or not database.strip():
                raise ConfigError(f"{where}: database must be a file path string")
            values["database"] = Path(database)
        if "concurrency" in table:
            concurrency = table["concurrency"]
            if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
                raise ConfigError(
                    f"{where}: concurrency must be an integer >= 1, got {concurrency!r}"
                )
            values["concurrency"] = concurrency
        for key in _SECONDS:
            if key in table:
                value = table[key]
                positive = key in _POSITIVE
                if (
                    isinstance(value, bool)
                    or not isinstance(value, (int, float))
                    or value < 0
                    or (positive and value == 0)
                ):
                    bound = "> 0" if positive else ">= 0"
                    raise ConfigError(
                        f"{where}: {key} must be a number of seconds {bound}, got {value!r}"
                    )
                values[key] = float(value)
        return cls(**values)


def resolve_config(config: Config | str | os.PathLike[str] | None) -> Config:
    """A :class:`~dispatch_ext.config.Config` from what ``Engine(config=...)`` accepts."""
    from ..config import Config, load_config

    if isinstance(config, Config):
        return config
    if config is None or isinstance(config, (str, os.PathLike)):
        return load_config(config)
    raise TypeError(
        f"config must be a dispatch_ext.config.Config, a path to a TOML file or None, "
        f"got {type(config).__name__}"
    )
