"""The hook specifications, their docstrings and Protocols, and a light ``import dispatch_ext``."""

from __future__ import annotations

import ast
import inspect
import re
import subprocess
import sys
import typing

import pytest

from dispatch_ext import HOOK_NAMES, hookspecs, interfaces
from dispatch_ext.markers import PROJECT_NAME

SPEC_ATTR = PROJECT_NAME + "_spec"


def spec_params(hook: str) -> list[str]:
    return list(inspect.signature(getattr(hookspecs, hook)).parameters)


def protocols() -> dict[str, type]:
    """hook name -> the Protocol in dispatch_ext.interfaces that declares it."""
    found: dict[str, type] = {}
    for name in interfaces.__all__:
        protocol = getattr(interfaces, name)
        hooks = [m for m in vars(protocol) if m.startswith("on_")]
        assert len(hooks) == 1, f"{name} should declare exactly one hook, declares {hooks}"
        assert hooks[0] not in found, f"{hooks[0]} has two Protocols"
        found[hooks[0]] = protocol
    return found


def args_section(docstring: str) -> list[str]:
    """The argument names documented in a Google-style ``Args:`` section."""
    lines = inspect.cleandoc(docstring).splitlines()
    try:
        start = lines.index("Args:")
    except ValueError:
        return []
    names: list[str] = []
    indent: int | None = None
    for line in lines[start + 1 :]:
        if not line.strip():
            continue
        current = len(line) - len(line.lstrip())
        if current == 0:
            break  # the next section
        if indent is None:
            indent = current
        if current == indent:
            match = re.match(r"\s*(\w+)(?: \([^)]*\))?:", line)
            assert match, f"cannot read the argument line {line!r}"
            names.append(match.group(1))
    return names


def test_hook_names_are_exactly_the_marked_specifications() -> None:
    marked = [
        name
        for name, obj in vars(hookspecs).items()
        if inspect.isfunction(obj) and hasattr(obj, SPEC_ATTR)
    ]
    assert sorted(marked) == sorted(HOOK_NAMES)
    assert len(HOOK_NAMES) == 13
    assert sorted(hookspecs.__all__) == sorted([*HOOK_NAMES, "HOOK_NAMES"])


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_each_hookspec_documents_exactly_its_arguments(hook: str) -> None:
    doc = getattr(hookspecs, hook).__doc__
    assert doc, f"{hook} has no docstring: it is the hook's reference documentation"
    summary = inspect.cleandoc(doc).splitlines()[0]
    assert summary.endswith("."), f"{hook}: the first line should be a sentence: {summary!r}"
    params = spec_params(hook)
    documented = args_section(doc)
    assert documented == params, (
        f"{hook}: the Args section documents {documented}, the signature takes {params}"
    )
    if not params:
        assert "Args:" not in doc


@pytest.mark.parametrize("hook", HOOK_NAMES)
def test_each_hook_has_a_protocol_with_the_same_signature(hook: str) -> None:
    protocol = protocols()[hook]
    method = getattr(protocol, hook)
    assert list(inspect.signature(method).parameters)[1:] == spec_params(hook)
    proto_hints = typing.get_type_hints(method)
    spec_hints = typing.get_type_hints(getattr(hookspecs, hook))
    proto_hints.pop("return")
    spec_hints.pop("return")
    assert proto_hints == spec_hints


def test_every_protocol_is_a_hook_and_exported() -> None:
    assert set(protocols()) == set(HOOK_NAMES)


def test_protocols_check_at_run_time() -> None:
    class Partial:
        def on_job_completed(self, job: object, elapsed: object) -> None:
            pass

    assert isinstance(Partial(), interfaces.JobCompleted)
    assert not isinstance(Partial(), interfaces.JobFailed)


def test_import_dispatch_ext_stays_light() -> None:
    code = (
        "import sys, dispatch_ext\n"
        "registry = dispatch_ext.Registry()\n"
        "print(repr(sorted(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    modules = set(ast.literal_eval(result.stdout))
    assert "dispatch_ext.registry" in modules  # the check itself works
    heavy = {
        "importlib.metadata",
        "importlib_metadata",
        "dispatch_ext.discovery",
        "dispatch_ext.config",
        "dispatch_ext.engine",
        "dispatch_ext.cli",
        "click",
        "sqlite3",
    }
    assert sorted(modules & heavy) == []
    assert not [m for m in modules if m.startswith("dispatch_ext.engine")]


def test_discover_is_reachable_lazily() -> None:
    code = (
        "import sys, dispatch_ext\n"
        "before = 'dispatch_ext.discovery' in sys.modules\n"
        "dispatch_ext.discover\n"
        "print(before, 'dispatch_ext.discovery' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert result.stdout.split() == ["False", "True"]


def test_public_names_resolve() -> None:
    import dispatch_ext

    for name in dispatch_ext.__all__:
        assert getattr(dispatch_ext, name) is not None
