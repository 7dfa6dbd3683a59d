"""pytest plugin of dispatch-ext: fixtures for extension authors.

Installed with ``dispatch-ext`` (entry point ``pytest11``), so the fixtures are available
in every test suite of an environment where ``dispatch-ext`` is installed; nothing needs to
go in a ``conftest.py``. See :mod:`dispatch_ext.testing`.

This module is imported by every pytest run: it imports nothing heavy at module level
(the engine is imported by the ``memory_engine`` fixture only).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ..engine import Engine
    from ..registry import Registry
    from .fakes import FakeDistributions
    from .recorder import Recorder

__all__ = ["dispatch_registry", "fake_distributions", "memory_engine", "recorder"]


@pytest.fixture
def dispatch_registry() -> Iterator[Registry]:
    """An empty :class:`~dispatch_ext.Registry` of this test alone, closed afterwards.

    It is not strict, like an engine's registry: a failing implementation is logged and
    counted, not raised. Set ``dispatch_registry.strict = True`` to have failures raised.
    """
    from ..registry import Registry

    registry = Registry(strict=False)
    try:
        yield registry
    finally:
        registry.close()


@pytest.fixture
def recorder() -> Recorder:
    """A fresh :class:`~dispatch_ext.testing.Recorder`, registered nowhere yet."""
    from .recorder import Recorder

    return Recorder()


@pytest.fixture
def memory_engine(recorder: Recorder) -> Iterator[Engine]:
    """An embedded engine on a ``MemoryStore``, with the ``recorder`` as its only extension.

    Discovery is off (``autoload=False``), so installed extensions stay out, and the
    configuration is the default one (``./dispatch.toml`` and ``DISPATCH_CONFIG`` are not
    read). Register more extensions with ``memory_engine.registry.register(ext)``. The
    engine is not started: run it with ``async with memory_engine:`` inside the test.
    """
    from ..config import Config
    from ..engine import Engine, MemoryStore

    engine = Engine(store=MemoryStore(), extensions=[recorder], autoload=False, config=Config())
    try:
        yield engine
    finally:
        engine.registry.close()


@pytest.fixture
def fake_distributions(tmp_path: Path) -> Iterator[FakeDistributions]:
    """A :class:`~dispatch_ext.testing.FakeDistributions` in a folder on ``sys.path``.

    Call it to install a distribution, or use ``.extension(name, source)`` for the
    common case of one extension; everything is removed after the test.
    """
    from .fakes import FakeDistributions

    with FakeDistributions(tmp_path / "site-packages") as fakes:
        yield fakes
