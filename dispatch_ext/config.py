"""The configuration file (``dispatch.toml``) and the environment switches.

Where the file comes from, first match wins: the ``path`` argument (the CLI's
``--config``), the ``DISPATCH_CONFIG`` environment variable, ``./dispatch.toml`` when it
exists; without any, the defaults apply. The file looks like this::

    [dispatch]
    autoload = true              # false: discover nothing
    enable = ["audit"]           # allowlist: only these load (omit: every extension)
    disable = ["webhooks"]       # blocklist
    strict = false               # true: a failed extension raises at start-up
    order = ["audit", "metrics"] # loaded first, in this order; the rest by name
    hook_timeout = 5.0           # seconds an async hook implementation may take

    [dispatch.timeouts]          # per extension, overrides hook_timeout
    webhooks = 2.0

    [extensions.audit]           # keyword arguments for that extension's class or factory
    path = "audit.jsonl"

Other top-level tables (``[engine]``, ...) are kept in :attr:`Config.raw` for the parts
that read them. The environment overrides the file: ``DISPATCH_EXT_AUTOLOAD=0``,
``DISPATCH_EXT_ENABLE=a,b``, ``DISPATCH_EXT_DISABLE=c``, ``DISPATCH_EXT_STRICT=1``.
"""

from __future__ import annotations

import difflib
import functools
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .errors import ConfigError

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG_FILE",
    "Config",
    "load_config",
    "normalize_name",
]

CONFIG_ENV = "DISPATCH_CONFIG"
"""Environment variable naming the configuration file."""

DEFAULT_CONFIG_FILE = "dispatch.toml"
"""Read from the current directory when no file is named."""

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


@functools.lru_cache(maxsize=4096)
def normalize_name(name: str) -> str:
    """Compare extension and distribution names this way: case, ``-``, ``_``, ``.`` alike."""
    return re.sub(r"[-_.]+", "-", name).lower()


def _empty() -> Mapping[str, Any]:
    return MappingProxyType({})


def _lookup(mapping: Mapping[str, Any], name: str) -> Any:
    if name in mapping:
        return mapping[name]
    wanted = normalize_name(name)
    for key, value in mapping.items():
        if normalize_name(key) == wanted:
            return value
    return None


@dataclass(frozen=True)
class Config:
    """What discovery and the engine were told to do; see :func:`load_config`."""

    autoload: bool = True
    """``False``: discover nothing, register nothing (``DISPATCH_EXT_AUTOLOAD=0``)."""
    enable: tuple[str, ...] | None = None
    """Allowlist of extension or distribution names; ``None``: no allowlist."""
    disable: tuple[str, ...] = ()
    """Blocklist of extension or distribution names."""
    strict: bool = False
    """A failed, conflicting or invalid extension raises instead of being skipped."""
    order: tuple[str, ...] = ()
    """Extensions loaded first, in this order; the others follow by name."""
    settings: Mapping[str, Mapping[str, Any]] = field(default_factory=_empty, hash=False)
    """``[extensions.<name>]`` tables: keyword arguments for each extension."""
    timeouts: Mapping[str, float] = field(default_factory=_empty, hash=False)
    """``[dispatch.timeouts]``: seconds per extension for its async implementations."""
    hook_timeout: float = 5.0
    """Default seconds an async hook implementation may take."""
    path: Path | None = None
    """The file this configuration was read from, if any."""
    raw: Mapping[str, Any] = field(default_factory=_empty, hash=False)
    """The whole TOML document, for the parts that keep their own tables."""
    origins: Mapping[str, str] = field(default_factory=_empty, hash=False, compare=False)
    """Where ``enable`` / ``disable`` came from when the environment set them, for
    messages: ``{"enable": "DISPATCH_EXT_ENABLE"}``. Empty when they are the file's (or
    were given in code)."""

    def __post_init__(self) -> None:
        for name in ("enable", "disable", "order"):
            value = getattr(self, name)
            if value is None and name == "enable":
                continue
            if isinstance(value, str):
                raise TypeError(
                    f"Config.{name} takes a sequence of names, not the string {value!r}"
                )
            object.__setattr__(self, name, tuple(value))
        for name in ("settings", "timeouts", "raw", "origins"):
            value = getattr(self, name)
            if not isinstance(value, MappingProxyType):
                object.__setattr__(self, name, MappingProxyType(dict(value)))

    def settings_for(self, name: str) -> dict[str, Any]:
        """The keyword arguments for extension ``name`` (a fresh dict; ``-``/``_`` alike)."""
        found = _lookup(self.settings, name)
        return {key: _copy_plain(value) for key, value in found.items()} if found else {}

    def timeout_for(self, name: str) -> float | None:
        """The configured timeout of extension ``name``, or ``None``."""
        found = _lookup(self.timeouts, name)
        return None if found is None else float(found)


def _copy_plain(value: Any) -> Any:
    """Copy the containers of a setting (so no build can change another's), keep objects.

    Settings from a file are plain data; settings given in code may hold live objects (a
    ``MeterProvider``, a logger) that cannot or must not be copied.
    """
    if isinstance(value, Mapping):
        return {key: _copy_plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy_plain(item) for item in value]
    return value


# -- reading ----------------------------------------------------------------------------


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    given_as: str | None = None,
) -> Config:
    """Read the configuration file and apply the environment switches.

    Args:
        path: The file to read; ``None`` looks at ``DISPATCH_CONFIG``, then
            ``./dispatch.toml``.
        environ: Where to read the environment (default ``os.environ``).
        given_as: How ``path`` was given, named in the error when the file is missing
            (the CLI passes ``"--config"``).

    Raises:
        ConfigError: The named file is missing or unreadable, is not valid TOML, or
            holds an unknown key or a value of the wrong type; an environment switch has
            a value that is not a switch. The message names the file, the key and the
            fix.
    """
    env = os.environ if environ is None else environ
    source = _resolve(path, env, given_as)
    config = Config() if source is None else _parse(_read(source), source)
    return _apply_environment(config, env)


def _resolve(
    path: str | os.PathLike[str] | None, env: Mapping[str, str], given_as: str | None
) -> Path | None:
    if path is not None and str(path).strip():
        chosen = Path(os.path.abspath(path))
    elif env.get(CONFIG_ENV, "").strip():
        chosen = Path(os.path.abspath(env[CONFIG_ENV].strip()))
    else:
        default = Path.cwd() / DEFAULT_CONFIG_FILE
        return default if default.is_file() else None
    if chosen.is_file():
        return chosen
    toml_file = "an existing TOML file"
    if chosen.is_dir():
        state = "is a directory, not a file"
        if (chosen / DEFAULT_CONFIG_FILE).is_file():
            toml_file += f" (such as {chosen / DEFAULT_CONFIG_FILE})"
    else:
        state = "does not exist"
    if path is not None and str(path).strip():
        told = (
            f"{given_as} names {chosen}, which" if given_as else f"the configuration file {chosen}"
        )
        fix = f"pass {toml_file} to {given_as}" if given_as else f"pass the path of {toml_file}"
    else:
        told = f"the environment variable {CONFIG_ENV} names {chosen}, which"
        fix = (
            f"point {CONFIG_ENV} at {toml_file}, or unset it to read ./{DEFAULT_CONFIG_FILE} "
            f"when present"
        )
    if not chosen.exists():
        fix = f"create it, or {fix}"
    raise ConfigError(f"{told} {state}; {fix}")


def _toml_loads() -> tuple[Callable[[str], dict[str, Any]], type[Exception]]:
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib.loads, tomllib.TOMLDecodeError
    import tomli

    return tomli.loads, tomli.TOMLDecodeError


def _read(path: Path) -> dict[str, Any]:
    loads, decode_error = _toml_loads()
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read the configuration file: {exc.strerror or exc}"
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc}); TOML files must be UTF-8") from exc
    try:
        return loads(text)
    except decode_error as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}; fix the syntax there") from exc


# -- checking ---------------------------------------------------------------------------

_DISPATCH_KEYS = ("autoload", "enable", "disable", "strict", "order", "hook_timeout", "timeouts")
_TOP_LEVEL_TABLES = ("dispatch", "extensions")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _did_you_mean(word: str, choices: tuple[str, ...], cutoff: float = 0.6) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=cutoff)
    return f"; did you mean {close[0]!r}?" if close else ""


def _parse(document: dict[str, Any], path: Path) -> Config:
    for key in document:
        if key not in _TOP_LEVEL_TABLES:
            hint = _did_you_mean(key, _TOP_LEVEL_TABLES, cutoff=0.9)
            if hint:
                raise ConfigError(f"{path}: unknown table [{key}]{hint} Rename it there.")
    dispatch = _table(document, "dispatch", path, "[dispatch]")
    unknown = [key for key in dispatch if key not in _DISPATCH_KEYS]
    if unknown:
        key = unknown[0]
        raise ConfigError(
            f"{path}: unknown key {key!r} in [dispatch]{_did_you_mean(key, _DISPATCH_KEYS)} "
            f"The known keys are: {', '.join(_DISPATCH_KEYS)}."
        )
    values: dict[str, Any] = {"path": path, "raw": MappingProxyType(document)}
    for key in ("autoload", "strict"):
        if key in dispatch:
            values[key] = _boolean(dispatch[key], path, key)
    for key in ("enable", "disable", "order"):
        if key in dispatch:
            values[key] = _names(dispatch[key], path, key)
    if "hook_timeout" in dispatch:
        values["hook_timeout"] = _seconds(dispatch["hook_timeout"], path, "[dispatch] hook_timeout")
    timeouts = _table(dispatch, "timeouts", path, "[dispatch.timeouts]")
    values["timeouts"] = MappingProxyType(
        {
            name: _seconds(value, path, f"[dispatch.timeouts] {name}")
            for name, value in timeouts.items()
        }
    )
    values["settings"] = MappingProxyType(_settings(document, path))
    return Config(**values)


def _table(parent: Mapping[str, Any], key: str, path: Path, label: str) -> dict[str, Any]:
    value = parent.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(
            f"{path}: {label} must be a table, got {type(value).__name__} {value!r}; "
            f"write it as a {label} section"
        )
    return value


def _boolean(value: Any, path: Path, key: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(
            f"{path}: [dispatch] {key} must be true or false, got {value!r}; "
            f"write {key} = true or {key} = false"
        )
    return value


def _names(value: Any, path: Path, key: str) -> tuple[str, ...]:
    if isinstance(value, str):
        raise ConfigError(
            f"{path}: [dispatch] {key} must be a list of names, got the string {value!r}; "
            f'write {key} = ["{value}"]'
        )
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ConfigError(
            f"{path}: [dispatch] {key} must be a list of extension names, got {value!r}; "
            f'write e.g. {key} = ["audit", "metrics"]'
        )
    return tuple(v.strip() for v in value)


def _seconds(value: Any, path: Path, label: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ConfigError(
            f"{path}: {label} must be a positive number of seconds, got {value!r}; write e.g. 5.0"
        )
    return float(value)


def _settings(document: dict[str, Any], path: Path) -> dict[str, Mapping[str, Any]]:
    extensions = _table(document, "extensions", path, "[extensions]")
    settings: dict[str, Mapping[str, Any]] = {}
    for name, table in extensions.items():
        label = f"[extensions.{name}]"
        if not isinstance(table, dict):
            raise ConfigError(
                f"{path}: {label} must be a table of keyword arguments, got {table!r}; "
                f"write it as a section, e.g. [extensions.{name}] with key = value lines"
            )
        for key in table:
            if not _IDENTIFIER.match(key):
                fixed = re.sub(r"\W+", "_", key).strip("_") or "name"
                raise ConfigError(
                    f"{path}: {label} key {key!r} cannot be a keyword argument; "
                    f"did you mean {fixed!r}?"
                )
        settings[name] = MappingProxyType(table)
    return settings


# -- environment ------------------------------------------------------------------------


def _switch(env: Mapping[str, str], variable: str) -> bool | None:
    value = env.get(variable, "").strip().lower()
    if not value:
        return None
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(
        f"environment variable {variable}={env[variable]!r} is not a switch value; "
        f"set it to 1 (on) or 0 (off)"
    )


def _name_list(env: Mapping[str, str], variable: str) -> tuple[str, ...] | None:
    value = env.get(variable, "")
    if not value.strip():
        return None
    return tuple(name.strip() for name in value.split(",") if name.strip())


def _apply_environment(config: Config, env: Mapping[str, str]) -> Config:
    changes: dict[str, Any] = {}
    autoload = _switch(env, "DISPATCH_EXT_AUTOLOAD")
    if autoload is not None:
        changes["autoload"] = autoload
    strict = _switch(env, "DISPATCH_EXT_STRICT")
    if strict is not None:
        changes["strict"] = strict
    origins: dict[str, str] = {}
    for key in ("enable", "disable"):
        variable = f"DISPATCH_EXT_{key.upper()}"
        names = _name_list(env, variable)
        if names is not None:
            changes[key] = names
            origins[key] = variable
    if origins:
        changes["origins"] = {**config.origins, **origins}
    return replace(config, **changes) if changes else config
