"""Discovery in fresh interpreters: every supported Python under ``-W error``, and the
promise that ``import dispatch_ext`` scans nothing.

Other interpreters are looked up under ``~/.pyenv/versions``; the running one always
takes part. An interpreter other than the running one borrows the pure-Python
dependencies of this environment through a folder of symbolic links.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dispatch_ext.testing.distributions import make_distribution

REPO = Path(__file__).resolve().parents[1]
VERSIONS = [(3, 10), (3, 11), (3, 12), (3, 13)]


def _interpreter(version: tuple[int, int]) -> Path | None:
    if sys.version_info[:2] == version:
        return Path(sys.executable)
    root = Path.home() / ".pyenv" / "versions"
    major, minor = version
    found = sorted(
        root.glob(f"{major}.{minor}.*/bin/python"),
        key=lambda p: tuple(int(x) for x in p.parts[-3].split(".") if x.isdigit()),
    )
    return found[-1] if found else None


def _lend_dependencies(folder: Path, version: tuple[int, int]) -> Path:
    """Link the pure-Python packages ``import dispatch_ext`` needs on ``version``."""
    needed = ["pluggy"]
    if version < (3, 11):
        needed += ["exceptiongroup", "typing_extensions", "tomli"]
    folder.mkdir()
    for name in needed:
        spec = importlib.util.find_spec(name)
        if spec is None:
            pytest.skip(f"{name} is not installed here, so Python {version} cannot borrow it")
        locations = spec.submodule_search_locations
        source = Path(locations[0] if locations else str(spec.origin))
        (folder / source.name).symlink_to(source, target_is_directory=source.is_dir())
    return folder


def _run(python: Path, script: str, cwd: Path, pythonpath: list[Path]) -> str:
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": os.environ.get("HOME", ""),
        "PYTHONPATH": os.pathsep.join(str(p) for p in pythonpath),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    done = subprocess.run(
        [str(python), "-W", "error", "-c", textwrap.dedent(script)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, f"{python} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


DISCOVER = """\
import json, sys, warnings
sys.path.insert(0, {site!r})
import dispatch_ext
from dispatch_ext.config import load_config
config = load_config()  # ./dispatch.toml
records = dispatch_ext.discover(config)
registry = dispatch_ext.Registry(strict=False)
registry.load_entrypoints(config)
registry.close()
print(json.dumps({{
    "records": [r.to_dict() for r in records if r.name.startswith("w-")],
    "registered": [name for name, _ in registry.extensions()],
    "settings": {{
        r.name: r.extension.settings for r in records
        if r.status == "loaded" and r.name.startswith("w-")
    }},
}}))
"""

EXTENSION = """\
class Extension:
    def __init__(self, **settings):
        self.settings = settings

    async def on_job_completed(self, job, elapsed):
        pass
"""


@pytest.mark.parametrize("version", VERSIONS, ids=[f"{a}.{b}" for a, b in VERSIONS])
def test_discovery_behaves_the_same_and_warns_nothing_on_every_python(
    tmp_path: Path, version: tuple[int, int]
) -> None:
    python = _interpreter(version)
    if python is None:
        pytest.skip(f"no Python {version[0]}.{version[1]} interpreter under ~/.pyenv/versions")
    site = tmp_path / "site"
    site.mkdir()
    make_distribution(
        site,
        "w-one",
        entry_points={"w-one": "w_one:Extension"},
        modules={"w_one.py": EXTENSION},
        extra_entry_point_lines="w-one = w_one:Extension\n",
    )
    make_distribution(
        site, "w-broken", entry_points={"w-broken": "w_broken:Nope"}, modules={"w_broken.py": ""}
    )
    make_distribution(
        site, "w-garbled", extra_entry_point_lines="[dispatch.extensions]\nw-garbled w_x:Y\n"
    )
    for dist in ("w-zz-second", "w-aa-first"):
        make_distribution(
            site,
            dist,
            entry_points={"w-shared": f"{dist.replace('-', '_')}:Extension"},
            modules={f"{dist.replace('-', '_')}.py": EXTENSION},
        )
    (tmp_path / "dispatch.toml").write_text(
        '[dispatch]\nenable = ["w-one", "w-broken", "w-shared", "w-garbled"]\n'
        '[extensions.w-one]\npath = "audit.jsonl"\n'
    )
    pythonpath = [REPO]
    if Path(python) != Path(sys.executable):
        pythonpath.append(_lend_dependencies(tmp_path / "deps", version))

    output = _run(python, DISCOVER.format(site=str(site)), tmp_path, pythonpath)

    result = json.loads(output)
    assert [(r["name"], r["distribution"], r["status"]) for r in result["records"]] == [
        ("w-broken", "w-broken", "failed"),
        ("w-garbled", "w-garbled", "failed"),
        ("w-one", "w-one", "loaded"),
        ("w-shared", "w-aa-first", "loaded"),
        ("w-shared", "w-zz-second", "conflict"),
    ]
    broken, garbled, one = result["records"][:3]
    assert "AttributeError" in broken["error"]
    assert "entry_points.txt of w-garbled 1.0 cannot be read" in garbled["error"]
    assert one["hooks"] == ["on_job_completed"]
    assert result["registered"] == ["w-one", "w-shared"]
    assert result["settings"] == {"w-one": {"path": "audit.jsonl"}, "w-shared": {}}


NO_SCAN = """\
import json, sys
calls = []

def spy(finder, original):
    def find_distributions(*args, **kwargs):
        calls.append(type(finder).__name__ if not isinstance(finder, type) else finder.__name__)
        return original(*args, **kwargs)
    return find_distributions

for finder in sys.meta_path:
    original = getattr(finder, "find_distributions", None)
    if original is not None:
        setattr(finder, "find_distributions", spy(finder, original))

import dispatch_ext
from dispatch_ext import Registry, config
Registry().close()
config.load_config(environ={})
state = {
    "calls": list(calls),
    "imported": sorted(
        m for m in ("importlib.metadata", "importlib_metadata", "dispatch_ext.discovery")
        if m in sys.modules
    ),
}
dispatch_ext.discover(config.Config(enable=()))  # proves the spy sees a scan
state["calls_after_discover"] = len(calls)
print(json.dumps(state))
"""


def test_import_dispatch_ext_scans_no_entry_points(tmp_path: Path) -> None:
    output = _run(Path(sys.executable), NO_SCAN, tmp_path, [REPO])

    state = json.loads(output)
    assert state["calls"] == []
    assert state["imported"] == []
    assert state["calls_after_discover"] > 0
