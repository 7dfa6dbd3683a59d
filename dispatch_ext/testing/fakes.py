"""Installed-looking extension distributions in a temporary folder on ``sys.path``."""

from __future__ import annotations

import contextlib
import importlib
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from .distributions import make_distribution, on_sys_path

__all__ = ["FakeDistributions"]

_EMPTY: Mapping[str, str] = {}


class FakeDistributions:
    """Writes real ``*.dist-info`` distributions into one folder that is on ``sys.path``.

    Discovery finds them through ``importlib.metadata`` exactly as it finds a
    pip-installed package. Use it as a context manager (the ``fake_distributions``
    fixture does): on exit the folder leaves ``sys.path``, the modules imported from it
    leave ``sys.modules``, and the discovery cache is cleared.

    Example:
        ```python
        with FakeDistributions(tmp_path) as fakes:
            fakes.extension("hello", "class Extension:\\n    def on_shutdown(self): ...\\n")
            records = {r.name: r for r in dispatch_ext.discover()}
            assert records["hello"].status == "loaded"
        ```

    Args:
        root: The folder playing ``site-packages``; created when missing.
    """

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        self._stack: contextlib.ExitStack | None = None

    def __enter__(self) -> FakeDistributions:
        self.root.mkdir(parents=True, exist_ok=True)
        stack = contextlib.ExitStack()
        stack.enter_context(on_sys_path(self.root))
        self._stack = stack
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    def __call__(
        self,
        name: str,
        version: str = "1.0",
        *,
        entry_points: Mapping[str, str] = _EMPTY,
        group: str = "dispatch.extensions",
        modules: Mapping[str, str] = _EMPTY,
        extra_entry_point_lines: str = "",
    ) -> Path:
        """Install one distribution and return its ``.dist-info`` folder.

        The arguments are those of
        :func:`dispatch_ext.testing.distributions.make_distribution`: ``entry_points``
        maps entry-point names to ``"module:attribute"`` values, ``modules`` maps file
        paths (or dotted module names) to their source.
        """
        dist_info = make_distribution(
            self.root,
            name,
            version,
            entry_points=entry_points,
            group=group,
            modules=modules,
            extra_entry_point_lines=extra_entry_point_lines,
        )
        _forget_scans()
        return dist_info

    def extension(
        self,
        name: str,
        source: str,
        *,
        attribute: str = "Extension",
        distribution: str | None = None,
        version: str = "1.0",
    ) -> Path:
        """Install a distribution with one extension, ``name``, defined by ``source``.

        The module is ``fake_dispatch_ext_<name>`` (dashes become underscores, and the
        prefix keeps it from shadowing a real installed package) and the entry point is
        ``name = fake_dispatch_ext_<name>:<attribute>``.

        Args:
            name: The entry-point (extension) name.
            source: The module's source; it defines ``attribute``.
            attribute: What the entry point names: a class, a factory or an object.
            distribution: The distribution name; defaults to ``dispatch-ext-<name>``.
            version: The distribution version.
        """
        module = "fake_dispatch_ext_" + re.sub(r"\W", "_", name)
        return self(
            distribution or f"dispatch-ext-{name}",
            version,
            entry_points={name: f"{module}:{attribute}"},
            modules={f"{module}.py": source},
        )


def _forget_scans() -> None:
    # A distribution written while its folder is already on sys.path must be seen by
    # the next scan: drop the finders' directory caches and the discovery scan cache.
    importlib.invalidate_caches()
    discovery = sys.modules.get("dispatch_ext.discovery")
    clear_cache = getattr(discovery, "clear_cache", None)
    if callable(clear_cache):
        clear_cache()
