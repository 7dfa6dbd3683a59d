"""Subcommands (to be filled)."""

from __future__ import annotations

from .app import main  # noqa: F401
