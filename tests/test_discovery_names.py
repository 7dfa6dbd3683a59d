"""Names in the configuration that match no installed extension, and names in the docs.

Real distributions (``*.dist-info`` folders) are put on ``sys.path``; their extensions
are all named ``t-*`` so that the built-in plugins installed in the environment never
match by accident.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from dispatch_ext.config import Config, load_config
from dispatch_ext.discovery import UnknownName, discover, unknown_names
from dispatch_ext.testing.distributions import make_distribution, on_sys_path

ROOT = Path(__file__).resolve().parent.parent

# Importing this module would raise: the name checks must never import an extension.
EXPLODES_ON_IMPORT = 'raise RuntimeError("this module must never be imported")\n'


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    """Two installed distributions whose modules must never be imported."""
    root = tmp_path / "site"
    for dist, name, module in [
        ("t-names-first", "t-sentry", "t_names_first"),
        ("t_names_other", "t-pager", "t_names_other"),
    ]:
        make_distribution(
            root,
            dist,
            entry_points={name: f"{module}:Extension"},
            modules={f"{module}.py": EXPLODES_ON_IMPORT},
        )
    with on_sys_path(root):
        yield root


def mine(found: list[UnknownName]) -> list[UnknownName]:
    return [item for item in found if item.name.lower().startswith("t")]


def test_every_configured_name_is_checked_against_the_installed_ones(
    site: Path, tmp_path: Path
) -> None:
    path = tmp_path / "dispatch.toml"
    path.write_text(
        '[dispatch]\nenable = ["t-sentry", "t-sentyr"]\ndisable = ["T_NAMES_OTHER", "t-pagr"]\n'
        'order = ["t-names-frist", "t-pager"]\n\n[dispatch.timeouts]\nt_pager = 1.0\n'
        "t-nothing-like-it = 2.0\n\n[extensions.t-sentri]\nlevel = 1\n\n[extensions.T-Pager]\n",
        encoding="utf-8",
    )
    config = load_config(path, environ={})

    found = mine(unknown_names(config))

    assert found == [
        UnknownName(f"[dispatch] enable in {path}", "t-sentyr", "t-sentry"),
        UnknownName(f"[dispatch] disable in {path}", "t-pagr", "t-pager"),
        UnknownName(f"[dispatch] order in {path}", "t-names-frist", "t-names-first"),
        UnknownName(f"[dispatch.timeouts] in {path}", "t-nothing-like-it", None),
        UnknownName(f"[extensions.t-sentri] in {path}", "t-sentri", "t-sentry"),
    ]
    assert "t_names_first" not in sys.modules
    assert "t_names_other" not in sys.modules


def test_a_name_from_the_environment_is_reported_as_coming_from_there(site: Path) -> None:
    config = load_config(environ={"DISPATCH_EXT_ENABLE": "t-pagre", "DISPATCH_CONFIG": ""})

    [found] = mine(unknown_names(config))

    assert found == UnknownName("DISPATCH_EXT_ENABLE", "t-pagre", "t-pager")
    assert found.describe() == (
        "DISPATCH_EXT_ENABLE names 't-pagre', but no installed extension has that "
        "entry-point or distribution name; did you mean 't-pager'?"
    )


def test_known_names_are_not_reported(site: Path) -> None:
    config = Config(
        enable=("t-sentry", "t-names-first", "T.Names.Other"),
        disable=("t_pager",),
        order=("t-pager",),
        timeouts={"t-sentry": 1.0},
        settings={"t_sentry": {}},
    )
    assert mine(unknown_names(config)) == []


def test_discovery_warns_about_each_unknown_name(
    site: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = Config(enable=("t-sentyr",), order=("t-pagr",))

    with caplog.at_level(logging.WARNING, logger="dispatch_ext"):
        records = [r for r in discover(config) if r.name.startswith("t-")]

    assert {r.status for r in records} == {"disabled"}
    messages = [r.getMessage() for r in caplog.records]
    assert (
        "[dispatch] enable names 't-sentyr', but no installed extension has that entry-point "
        "or distribution name; did you mean 't-sentry'?"
    ) in messages
    assert any("'t-pagr'" in m and "did you mean 't-pager'?" in m for m in messages)


def test_an_engine_start_warns_about_an_unknown_name(
    site: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from dispatch_ext.engine import Engine, MemoryStore

    async def start_and_stop() -> None:
        async with Engine(store=MemoryStore(), config=Config(enable=("t-sentri",))):
            pass

    with caplog.at_level(logging.WARNING, logger="dispatch_ext"):
        asyncio.run(start_and_stop())

    assert any(
        "names 't-sentri'" in r.getMessage() and "did you mean 't-sentry'?" in r.getMessage()
        for r in caplog.records
    )


# -- the names used in the documentation's examples -----------------------------------------


def _builtin_names() -> set[str]:
    names = set()
    for pyproject in ROOT.glob("plugins/*/pyproject.toml"):
        text = pyproject.read_text(encoding="utf-8")
        section = text.split('[project.entry-points."dispatch.extensions"]', 1)[1]
        for line in section.split("\n[", 1)[0].splitlines():
            if "=" in line:
                names.add(line.split("=", 1)[0].strip().lower())
    return names


def _example_extension_names() -> dict[str, str]:
    """``name = "..."`` class attributes in the Python blocks of the docs and README."""
    found = {}
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    block = re.compile(r"^( *)```python\n(.*?)^\1```", re.MULTILINE | re.DOTALL)
    attribute = re.compile(r'^ +name = "([^"]+)"', re.MULTILINE)
    for page in pages:
        for match in block.finditer(page.read_text(encoding="utf-8")):
            for name in attribute.findall(match.group(2)):
                found[name] = page.relative_to(ROOT).as_posix()
    return found


def test_documentation_examples_do_not_take_a_built_in_extension_name() -> None:
    builtins = _builtin_names()
    examples = _example_extension_names()
    assert {"audit", "metrics", "webhooks"} <= builtins
    assert examples["slog-audit"] == "docs/coming-from-go.md"  # the search sees the tabs

    clashes = {name: page for name, page in examples.items() if name.lower() in builtins}
    assert clashes == {}, "an example registered next to the built-ins would be refused"
