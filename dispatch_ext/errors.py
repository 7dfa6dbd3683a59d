"""Exceptions raised by dispatch-ext."""

from __future__ import annotations


class DispatchExtError(Exception):
    """Base class of every error dispatch-ext raises on purpose."""


class RegistrationError(DispatchExtError, ValueError):
    """An extension was refused by :meth:`dispatch_ext.Registry.register`.

    Nothing of the refused extension is registered.
    """


class UnknownHookError(DispatchExtError, LookupError):
    """A hook name that is not one of the hook specifications."""


class ExtensionLoadError(DispatchExtError):
    """Discovery failed in strict mode; ``records`` holds the extensions that failed."""

    def __init__(self, message: str, records: list[object] | None = None) -> None:
        super().__init__(message)
        self.records = records or []


class HookTimeoutError(DispatchExtError, TimeoutError):
    """An async hook implementation did not finish within its timeout."""


class ConfigError(DispatchExtError, ValueError):
    """The configuration file or an environment switch is malformed."""
