"""The documentation: every hook documented and tested, the CLI page fresh, a strict build."""

from __future__ import annotations

import ast
import importlib.util
import inspect
import re
import subprocess
import sys
import types
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import griffe
import pytest
import yaml

import dispatch_ext
import dispatch_ext.testing
from dispatch_ext import HOOK_NAMES, hookspecs

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"

# Test files that mention every hook without testing any one of them on its own.
NOT_HOOK_TESTS = re.compile(r"^test_(docs|testing_kit)\.py$|spec|interfaces")


# -- the hook reference ------------------------------------------------------------------


@cache
def _hookspecs_module() -> griffe.Module:
    module = griffe.load("dispatch_ext.hookspecs", search_paths=[str(ROOT)])
    assert isinstance(module, griffe.Module)
    return module


def _documented_arguments(hook: str) -> tuple[str, dict[str, str]]:
    """The summary line and the ``Args`` section of a hook, as mkdocstrings reads them."""
    function = _hookspecs_module()[hook]
    assert function.docstring is not None, f"{hook} has no docstring"
    sections = function.docstring.parse("google")
    summary = sections[0].value if sections and sections[0].kind.value == "text" else ""
    arguments: dict[str, str] = {}
    for section in sections:
        if section.kind.value == "parameters":
            arguments.update({p.name: p.description for p in section.value})
    return summary, arguments


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_every_hook_documents_each_of_its_arguments(hook: str) -> None:
    summary, arguments = _documented_arguments(hook)
    parameters = list(inspect.signature(getattr(hookspecs, hook)).parameters)

    assert summary.strip(), f"{hook}: the docstring needs a summary line"
    assert list(arguments) == parameters, (
        f"{hook}: the Args section documents {list(arguments)}, the signature has {parameters}"
    )
    for name, description in arguments.items():
        assert description.strip(), f"{hook}: argument {name!r} has no description"


def _directive_options(page: Path, identifier: str) -> dict[str, Any]:
    """The YAML options under ``::: identifier`` in a page ({} when it has none)."""
    lines = page.read_text(encoding="utf-8").splitlines()
    start = lines.index(f"::: {identifier}")
    block: list[str] = []
    for line in lines[start + 1 :]:
        if line and not line.startswith("    "):
            break
        block.append(line[4:])
    loaded = yaml.safe_load("\n".join(block)) or {}
    return dict(loaded.get("options", {}))


def test_the_hook_reference_page_renders_every_hook() -> None:
    options = _directive_options(DOCS / "reference" / "hooks.md", "dispatch_ext.hookspecs")
    members = options.get("members")
    assert members is None or set(HOOK_NAMES) <= set(members), (
        f"docs/reference/hooks.md leaves out {sorted(set(HOOK_NAMES) - set(members or ()))}"
    )
    table = (DOCS / "reference" / "hooks.md").read_text(encoding="utf-8")
    for hook in HOOK_NAMES:
        assert f"(#dispatch_ext.hookspecs.{hook})" in table, f"{hook} is missing from the table"


# -- every hook has a test ---------------------------------------------------------------


def _test_files() -> Iterator[Path]:
    yield from sorted((ROOT / "tests").rglob("test_*.py"))
    yield from sorted((ROOT / "plugins").glob("*/tests/**/test_*.py"))


def _asserting_tests(path: Path) -> Iterator[tuple[str, str]]:
    """``(name, source)`` of each test function in ``path`` that asserts something."""
    source = path.read_text(encoding="utf-8")
    for node in ast.walk(ast.parse(source, filename=str(path))):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if not node.name.startswith("test"):
            continue
        asserts = any(
            isinstance(sub, ast.Assert)
            or (isinstance(sub, ast.Attribute) and sub.attr in {"raises", "wait_for"})
            for sub in ast.walk(node)
        )
        if asserts:
            yield node.name, ast.get_source_segment(source, node) or ""


@cache
def _tests_by_hook() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {hook: [] for hook in HOOK_NAMES}
    pattern = re.compile(r"\b(" + "|".join(HOOK_NAMES) + r")\b")
    for path in _test_files():
        if NOT_HOOK_TESTS.search(path.name):
            continue
        for name, source in _asserting_tests(path):
            for hook in set(pattern.findall(source)):
                found[hook].append(f"{path.relative_to(ROOT)}::{name}")
    return found


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_every_hook_has_a_test_of_its_own(hook: str) -> None:
    assert _tests_by_hook()[hook], (
        f"no test asserts anything about {hook}: add one (in tests/ or plugins/*/tests/) "
        f"that makes the engine or a bridge fire it and checks what extensions hear"
    )


def test_the_hook_test_search_sees_only_asserting_tests(tmp_path: Path) -> None:
    sample = tmp_path / "test_sample.py"
    sample.write_text(
        "def test_checks():\n    assert recorder.hooks() == ['on_job_dlq']\n\n"
        "def test_only_calls():\n    registry.emit('on_cron_fired')\n\n"
        "def helper():\n    assert 'on_shutdown'\n",
        encoding="utf-8",
    )
    assert [name for name, _ in _asserting_tests(sample)] == ["test_checks"]


# -- the CLI reference -------------------------------------------------------------------


def _cli_docs_tool() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(
        "gen_cli_docs", ROOT / "tools" / "gen_cli_docs.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_cli_reference_is_up_to_date() -> None:
    tool = _cli_docs_tool()
    committed = (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")
    assert committed == tool.render(), (
        "docs/reference/cli.md is stale: run python tools/gen_cli_docs.py and commit it"
    )


def test_the_cli_reference_covers_every_command() -> None:
    from dispatch_ext.cli import main

    committed = (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")
    for name, command in main.commands.items():
        if not command.hidden:
            assert f"\n## dispatch-ext {name}\n" in committed, f"{name} is not documented"


# -- pages and public names --------------------------------------------------------------


def _nav_pages(entries: Any) -> Iterator[str]:
    if isinstance(entries, str):
        yield entries
    elif isinstance(entries, list):
        for entry in entries:
            yield from _nav_pages(entry)
    elif isinstance(entries, dict):
        for value in entries.values():
            yield from _nav_pages(value)


def _mkdocs_config() -> dict[str, Any]:
    # mkdocs.yml uses no custom tags, so the safe loader reads it.
    return dict(yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8")))


def test_every_page_is_in_the_nav_and_every_nav_entry_exists() -> None:
    config = _mkdocs_config()
    assert config["strict"] is True
    nav = list(_nav_pages(config["nav"]))
    pages = sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))
    assert sorted(nav) == pages
    assert len(nav) == len(set(nav)), "a page is listed twice in the nav"


def _directives() -> dict[str, list[str] | None]:
    """Every ``::: identifier`` of the reference pages and its ``members`` (None: all)."""
    found: dict[str, list[str] | None] = {}
    for page in sorted((DOCS / "reference").glob("*.md")):
        for identifier in re.findall(r"^::: (\S+)$", page.read_text(encoding="utf-8"), re.M):
            members = _directive_options(page, identifier).get("members")
            found[identifier] = None if members is None else list(members)
    return found


def _home_of(package: types.ModuleType, name: str) -> str:
    """The dotted path of the submodule that defines ``package.<name>``."""
    value = getattr(package, name)
    if isinstance(value, (type, types.FunctionType)):
        return f"{value.__module__}.{value.__qualname__}"
    for module_name, module in sorted(sys.modules.items()):
        if (
            module_name.startswith(package.__name__ + ".")
            and module is not None
            and vars(module).get(name) is value
            and name in getattr(module, "__all__", (name,))
        ):
            return f"{module_name}.{name}"
    raise AssertionError(f"{package.__name__}.{name} is defined in no submodule's __all__")


@pytest.mark.parametrize("package", [dispatch_ext, dispatch_ext.testing], ids=lambda m: m.__name__)
def test_every_public_name_is_in_the_api_reference(package: types.ModuleType) -> None:
    directives = _directives()
    missing = []
    for name in package.__all__:
        if name.startswith("__"):
            continue
        path = _home_of(package, name)
        module = path.rsplit(".", 1)[0]
        members = directives.get(module, [])
        if path not in directives and (members is not None and name not in members):
            missing.append(path)
    assert missing == [], f"add '::: <path>' to a page of docs/reference for {missing}"


# -- the site ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    target = tmp_path_factory.mktemp("site")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(target)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stderr}"
    return target


@pytest.mark.slow
def test_the_site_builds_strictly_with_every_hook_rendered(site: Path) -> None:
    html = (site / "reference" / "hooks" / "index.html").read_text(encoding="utf-8")
    sections = re.split(r'(?=id="dispatch_ext\.hookspecs\.on_)', html)
    for hook in HOOK_NAMES:
        [section] = [s for s in sections if s.startswith(f'id="dispatch_ext.hookspecs.{hook}"')]
        for argument in inspect.signature(getattr(hookspecs, hook)).parameters:
            assert f"<code>{argument}</code>" in section, f"{hook}: {argument} is not rendered"
    assert ":func:" not in html, "a reST role was left unconverted"
    assert 'href="#dispatch_ext.hookspecs.on_job_dlq"' in html


@pytest.mark.slow
def test_the_site_includes_the_changelog_and_the_cli_reference(site: Path) -> None:
    changelog = (site / "changelog" / "index.html").read_text(encoding="utf-8")
    first_heading = re.search(r"^## (.+)$", (ROOT / "CHANGELOG.md").read_text("utf-8"), re.M)
    assert first_heading is not None
    assert first_heading.group(1).replace("[", "").replace("]", "") in changelog
    cli = (site / "reference" / "cli" / "index.html").read_text(encoding="utf-8")
    assert 'id="dispatch-ext-new"' in cli
