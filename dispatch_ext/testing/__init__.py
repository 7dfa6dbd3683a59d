"""Testing kit for extension authors.

Importable anywhere; with pytest it is also a plugin (registered through the ``pytest11``
entry point of ``dispatch-ext``) that provides four fixtures:

- ``dispatch_registry``: an empty :class:`~dispatch_ext.Registry` of the test alone.
- ``recorder``: a :class:`Recorder`, an extension that records every hook call.
- ``memory_engine``: an embedded engine on a ``MemoryStore`` with the recorder
  registered and discovery off.
- ``fake_distributions``: a :class:`FakeDistributions` for discovery tests.

:func:`check_extension` and :func:`assert_valid_extension` check an extension against the
hook specifications without running an engine.
"""

from __future__ import annotations

from .contract import assert_valid_extension, check_extension
from .distributions import make_distribution, on_sys_path
from .fakes import FakeDistributions
from .recorder import Event, Recorder

__all__ = [
    "Event",
    "FakeDistributions",
    "Recorder",
    "assert_valid_extension",
    "check_extension",
    "make_distribution",
    "on_sys_path",
]
