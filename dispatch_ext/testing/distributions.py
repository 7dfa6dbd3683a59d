"""Real installed distributions for tests: ``*.dist-info`` folders and their modules.

:func:`make_distribution` writes what ``pip install`` would leave in ``site-packages``
(``METADATA``, ``entry_points.txt``, ``RECORD``, ``top_level.txt`` and the module files),
so discovery runs through the same ``importlib.metadata`` code path as in production.
:func:`on_sys_path` makes such a folder importable for the duration of a ``with`` block::

    from dispatch_ext.testing.distributions import make_distribution, on_sys_path

    make_distribution(
        tmp_path,
        "dispatch-ext-hello",
        entry_points={"hello": "hello_ext:Hello"},
        modules={"hello_ext.py": "class Hello:\\n    def on_shutdown(self): ...\\n"},
    )
    with on_sys_path(tmp_path):
        records = dispatch_ext.discover(Config(enable=("hello",)))
"""

from __future__ import annotations

import importlib
import re
import sys
import textwrap
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

__all__ = ["dist_info_name", "make_distribution", "on_sys_path"]

_EMPTY: Mapping[str, str] = {}


def dist_info_name(name: str, version: str) -> str:
    """The ``<name>-<version>.dist-info`` folder name a wheel installer would create."""
    return f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}.dist-info"


def _module_file(key: str) -> str:
    """A path relative to the root: ``"pkg/mod.py"`` as given, ``"pkg.mod"`` -> ``pkg/mod.py``."""
    if "/" in key or key.endswith(".py"):
        return key
    return key.replace(".", "/") + ".py"


def make_distribution(
    root: Path,
    name: str,
    version: str = "1.0",
    *,
    entry_points: Mapping[str, str] = _EMPTY,
    group: str = "dispatch.extensions",
    modules: Mapping[str, str] = _EMPTY,
    extra_entry_point_lines: str = "",
) -> Path:
    """Write an installed distribution into ``root`` and return its ``.dist-info`` folder.

    Args:
        root: The folder that plays ``site-packages`` (put it on ``sys.path`` with
            :func:`on_sys_path`).
        name: The distribution name, as in ``METADATA`` (``Name:``).
        version: The distribution version.
        entry_points: ``{entry-point name: "module:attribute"}`` written under ``group``.
        group: The entry-point group of ``entry_points``.
        modules: ``{path: source}`` written relative to ``root``; a path is either a file
            path (``"pkg/mod.py"``) or a dotted module name (``"pkg.mod"``). Sources are
            dedented.
        extra_entry_point_lines: Raw text appended to ``entry_points.txt`` right after
            the ``group`` entries (repeat a line, add a ``[console_scripts]`` section...).
    """
    root = Path(root)
    dist_info = root / dist_info_name(name, version)
    dist_info.mkdir(parents=True, exist_ok=True)
    written: list[str] = []

    def write(relative: str, text: str) -> None:
        target = root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        written.append(relative)

    top_level: set[str] = set()
    for key, source in modules.items():
        relative = _module_file(key)
        write(relative, textwrap.dedent(source))
        top_level.add(relative.split("/", 1)[0].removesuffix(".py"))

    info = dist_info.name
    write(
        f"{info}/METADATA",
        f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        f"Summary: {name}, written by dispatch_ext.testing\n",
    )
    text = ""
    if entry_points:
        text = f"[{group}]\n" + "".join(f"{ep} = {value}\n" for ep, value in entry_points.items())
    if extra_entry_point_lines:
        text += textwrap.dedent(extra_entry_point_lines).strip("\n") + "\n"
    if text:
        write(f"{info}/entry_points.txt", text)
    write(f"{info}/top_level.txt", "".join(f"{top}\n" for top in sorted(top_level)))
    write(f"{info}/INSTALLER", "dispatch_ext.testing\n")
    record = "".join(f"{path},,\n" for path in written) + f"{info}/RECORD,,\n"
    (dist_info / "RECORD").write_text(record, encoding="utf-8")
    return dist_info


def _lives_under(module: object, root: str) -> bool:
    files = [getattr(module, "__file__", None), *(getattr(module, "__path__", None) or ())]
    return any(isinstance(f, str) and (f == root or f.startswith(root + "/")) for f in files)


def _forget_caches() -> None:
    importlib.invalidate_caches()
    discovery = sys.modules.get("dispatch_ext.discovery")
    if discovery is not None:
        discovery.clear_cache()


@contextmanager
def on_sys_path(root: Path | str, *, prepend: bool = True) -> Iterator[Path]:
    """Put ``root`` on ``sys.path`` for the ``with`` block, with fresh discovery.

    On entry and exit the discovery scan cache and the import system's caches are
    cleared; on exit ``root`` leaves ``sys.path`` and every module imported from under
    it leaves ``sys.modules``.

    Args:
        root: The folder holding distributions made with :func:`make_distribution`.
        prepend: Insert at the front of ``sys.path`` (the default) or append.
    """
    entry = str(root)
    if prepend:
        sys.path.insert(0, entry)
    else:
        sys.path.append(entry)
    _forget_caches()
    try:
        yield Path(root)
    finally:
        if prepend:
            sys.path.remove(entry)
        else:
            for index in range(len(sys.path) - 1, -1, -1):
                if sys.path[index] == entry:
                    del sys.path[index]
                    break
        prefix = str(Path(root).resolve())
        for name, module in list(sys.modules.items()):
            if _lives_under(module, entry) or _lives_under(module, prefix):
                del sys.modules[name]
        _forget_caches()
