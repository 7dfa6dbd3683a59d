"""End to end: ``pip install`` the audit extension into a fresh virtual environment.

The same path a user takes: build and install ``dispatch-ext`` and
``plugins/dispatch-ext-audit`` as regular (non-editable) distributions, then ask the
installed console script what it discovered. Sources are copied first, so the build never
writes into the working tree.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dispatch_ext import HOOK_NAMES

REPO = Path(__file__).resolve().parents[1]
AUDIT = REPO / "plugins" / "dispatch-ext-audit"
JUNK = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist", ".*", "tests")

pytestmark = pytest.mark.slow


def copy_sources(target: Path) -> tuple[Path, Path]:
    framework = target / "dispatch-ext"
    framework.mkdir(parents=True)
    shutil.copytree(REPO / "dispatch_ext", framework / "dispatch_ext", ignore=JUNK)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, framework / name)
    audit = target / "dispatch-ext-audit"
    shutil.copytree(AUDIT, audit, ignore=JUNK)
    return framework, audit


def clean_environment() -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DISPATCH_", "PYTHON", "VIRTUAL_ENV"))
    }
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run(args: list[str | Path], cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=clean_environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


def test_pip_installed_audit_is_listed_as_loaded(tmp_path: Path) -> None:
    framework, audit = copy_sources(tmp_path / "src")
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", venv], cwd=tmp_path, timeout=120)
    bin_dir = venv / ("Scripts" if os.name == "nt" else "bin")
    run(
        [bin_dir / "python", "-m", "pip", "install", "--quiet", framework, audit],
        cwd=tmp_path,
        timeout=300,
    )

    workdir = tmp_path / "work"  # no dispatch.toml here
    workdir.mkdir()
    listed = json.loads(run([bin_dir / "dispatch-ext", "list", "--json"], workdir, 60).stdout)

    [entry] = [e for e in listed if e["name"] == "audit"]
    assert entry == {
        "name": "audit",
        "distribution": "dispatch-ext-audit",
        "version": "0.1.0",
        "status": "loaded",
        "hooks": list(HOOK_NAMES),
        "error": None,
    }
    assert run([bin_dir / "dispatch-ext", "check"], workdir, 60).stdout.startswith(
        "OK: 1 extension loaded (audit)"
    )
    # a real install, not a path back into the working tree; typed
    location = run(
        [bin_dir / "python", "-c", "import dispatch_ext_audit; print(dispatch_ext_audit.__file__)"],
        workdir,
        60,
    ).stdout.strip()
    package = Path(location).parent
    assert package.is_relative_to(venv)
    assert (package / "py.typed").is_file()
    assert not list(workdir.iterdir())  # listing built the extension but wrote no audit file
