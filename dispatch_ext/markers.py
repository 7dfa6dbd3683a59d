"""The pluggy project name and the two markers of dispatch-ext."""

from __future__ import annotations

import pluggy

PROJECT_NAME = "dispatch_ext"
"""The pluggy project name; markers set the attribute ``dispatch_ext_impl``/``_spec``."""

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
"""Marks a function in :mod:`dispatch_ext.hookspecs` as a hook specification."""

hookimpl = pluggy.HookimplMarker(PROJECT_NAME)
"""Marks an extension method as a hook implementation.

A method whose name is exactly a hook's name needs no marker. Use the marker to pass
``tryfirst=True`` / ``trylast=True``, or ``specname="on_job_completed"`` to implement a hook
under another method name.
"""
