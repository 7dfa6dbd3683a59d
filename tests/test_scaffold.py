"""``dispatch-ext new``: a scaffolded distribution installs, loads and passes its own tests."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from dispatch_ext.cli import main
from dispatch_ext.cli.scaffold import scaffold, scaffold_names

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

CLI = Path(sys.executable).with_name("dispatch-ext")

EXPECTED_FILES = [
    ".gitignore",
    "README.md",
    "dispatch_ext_slack_alerts/__init__.py",
    "dispatch_ext_slack_alerts/extension.py",
    "dispatch_ext_slack_alerts/py.typed",
    "pyproject.toml",
    "tests/test_extension.py",
]


def files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_names_derive_from_the_extension_name() -> None:
    names = scaffold_names("slack-alerts")
    assert names.distribution == "dispatch-ext-slack-alerts"
    assert names.package == "dispatch_ext_slack_alerts"
    assert names.class_name == "SlackAlertsExtension"
    assert names.title == "Slack alerts"
    assert scaffold_names("pager_duty2").package == "dispatch_ext_pager_duty2"


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("Slack.Alerts", "for example 'slack-alerts'"),
        ("2fa", "starting with a letter; for example 'fa'"),
        ("slack alerts", "for example 'slack-alerts'"),
        ("slack--alerts", "for example 'slack-alerts'"),
        ("-", "starting with a letter\n"),
        ("dispatch-ext-pager", "'dispatch-ext new pager' creates the distribution"),
    ],
)
def test_invalid_names_are_refused_with_a_hint(name: str, hint: str) -> None:
    with pytest.raises(ValueError, match=r"extension name|without the prefix") as caught:
        scaffold_names(name)
    assert hint.rstrip("\n") in str(caught.value)
    if hint.endswith("\n"):
        assert "for example" not in str(caught.value)


def test_new_writes_a_complete_distribution(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["new", "slack-alerts", "--directory", str(tmp_path)])

    assert result.exit_code == 0, result.output
    root = tmp_path / "dispatch-ext-slack-alerts"
    assert files_under(root) == EXPECTED_FILES
    assert f"Created dispatch-ext-slack-alerts in {root.resolve()}" in result.output
    assert 'python -m pip install -e ".[test]"' in result.output

    pyproject = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))
    assert pyproject["project"]["name"] == "dispatch-ext-slack-alerts"
    assert pyproject["project"]["entry-points"]["dispatch.extensions"] == {
        "slack-alerts": "dispatch_ext_slack_alerts:SlackAlertsExtension"
    }
    assert pyproject["build-system"]["build-backend"] == "setuptools.build_meta"
    for path in root.rglob("*.py"):
        ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for path in root.rglob("*"):
        if path.is_file():
            assert "${" not in path.read_text(encoding="utf-8"), path


def test_scaffolded_code_passes_the_linters(tmp_path: Path) -> None:
    root = scaffold("pager-duty", tmp_path)
    ruff = Path(sys.executable).with_name("ruff")
    rules = "E,F,W,I,B,UP,SIM,RUF,PT,C4"
    result = subprocess.run(
        [str(ruff), "check", "--isolated", "--select", rules, "--ignore", "E501", "."],
        cwd=root,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_new_never_overwrites(tmp_path: Path) -> None:
    existing = tmp_path / "dispatch-ext-pager"
    existing.mkdir()
    (existing / "notes.txt").write_text("keep me", encoding="utf-8")

    result = CliRunner().invoke(main, ["new", "pager", "-d", str(tmp_path)])

    assert result.exit_code == 1
    assert f"{existing.resolve()} exists already; nothing was written" in result.output
    assert files_under(existing) == ["notes.txt"]
    with pytest.raises(FileExistsError):
        scaffold("pager", tmp_path)


@pytest.mark.parametrize(
    ("name", "class_name"),
    [
        ("slack-alerts", "SlackAlertsExtension"),
        ("a_b-c", "ABCExtension"),
        ("s3_sync", "S3SyncExtension"),
        ("pager", "PagerExtension"),
    ],
)
def test_the_class_name_is_each_word_capitalised_and_the_rule_is_in_the_help(
    name: str, class_name: str
) -> None:
    assert scaffold_names(name).class_name == class_name

    help_text = " ".join(CliRunner().invoke(main, ["new", "--help"]).output.split())
    assert "split at '-' and '_'), each capitalised, joined, then 'Extension'" in help_text
    assert "a_b-c gives ABCExtension" in help_text


def test_new_refuses_a_folder_that_does_not_exist_and_creates_nothing(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir"

    result = CliRunner().invoke(main, ["new", "pager", "-d", str(missing)])

    assert result.exit_code == 1
    assert f"{missing} does not exist; nothing was written." in result.stderr
    assert f"mkdir -p {missing}" in result.stderr
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FileNotFoundError):
        scaffold("pager", missing)
    assert list(tmp_path.iterdir()) == []


def test_new_refuses_a_file_as_the_folder(tmp_path: Path) -> None:
    a_file = tmp_path / "notes.txt"
    a_file.write_text("keep me", encoding="utf-8")

    with pytest.raises(NotADirectoryError, match="is not a directory; nothing was written"):
        scaffold("pager", a_file)
    assert files_under(tmp_path) == ["notes.txt"]


def test_new_refuses_a_bad_name_as_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["new", "Slack.Alerts", "-d", str(tmp_path)])

    assert result.exit_code == 2
    assert "Invalid value for NAME: 'Slack.Alerts' is not a valid extension name" in result.output
    assert list(tmp_path.iterdir()) == []


def _run(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout}\n{result.stderr}"
    return result


def test_scaffolded_distribution_installs_loads_and_passes_its_tests(tmp_path: Path) -> None:
    root = scaffold("slack-alerts", tmp_path)
    site = tmp_path / "site-packages"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    for variable in ("DISPATCH_CONFIG", "DISPATCH_EXT_AUTOLOAD", "DISPATCH_EXT_ENABLE"):
        env.pop(variable, None)
    env["DISPATCH_EXT_DISABLE"] = ""

    # A real pip install, offline, into a folder of its own: the shared environment stays
    # untouched and the build uses the setuptools already installed.
    _run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "--target", str(site), str(root)],
        cwd=tmp_path,
        env=env,
    )  # fmt: skip
    assert (site / "dispatch_ext_slack_alerts" / "extension.py").is_file()

    listed = _run([str(CLI), "list", "--json"], cwd=tmp_path, env=env)
    records = {record["name"]: record for record in json.loads(listed.stdout)}
    assert records["slack-alerts"] == {
        "name": "slack-alerts",
        "distribution": "dispatch-ext-slack-alerts",
        "version": "0.1.0",
        "status": "loaded",
        "hooks": ["on_job_completed", "on_job_failed", "on_shutdown"],
        "error": None,
    }

    tested = _run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"], cwd=root, env=env
    )
    # Nothing but passes: no failure, error, skip or warning in the summary line.
    assert re.search(r"^5 passed in ", tested.stdout, re.MULTILINE), tested.stdout


def _code_block(page: Path, language: str, containing: str) -> str:
    """The one fenced code block of ``page`` in ``language`` that contains ``containing``."""
    blocks = re.findall(rf"^```{language}\n(.*?)^```$", page.read_text("utf-8"), re.M | re.S)
    [block] = [b for b in blocks if containing in b]
    return str(block)


def test_the_getting_started_walkthrough_works_as_written(tmp_path: Path) -> None:
    # Step by step as docs/getting-started.md tells a new user, with its own code blocks.
    page = Path(__file__).resolve().parent.parent / "docs" / "getting-started.md"
    site = tmp_path / "site-packages"
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1"}
    for variable in [v for v in env if v.startswith(("DISPATCH_EXT_", "DISPATCH_CONFIG"))]:
        del env[variable]

    _run([str(CLI), "new", "slow-jobs"], cwd=tmp_path, env=env)
    root = tmp_path / "dispatch-ext-slow-jobs"
    module = root / "dispatch_ext_slow_jobs" / "extension.py"
    hook = _code_block(page, "python", "def on_job_retrying(")
    source = module.read_text("utf-8")
    module.write_text(
        source.replace("    def on_shutdown", hook + "\n    def on_shutdown"), "utf-8"
    )

    _run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
         "--no-build-isolation", "--target", str(site), str(root)],
        cwd=tmp_path,
        env=env,
    )  # fmt: skip
    listed = _run([str(CLI), "list", "--json"], cwd=root, env=env)
    [record] = [r for r in json.loads(listed.stdout) if r["name"] == "slow-jobs"]
    assert record["status"] == "loaded"
    assert "on_job_retrying" in record["hooks"]
    tested = _run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"], root, env)
    assert re.search(r"^5 passed in ", tested.stdout, re.MULTILINE), tested.stdout

    (root / "app.py").write_text(_code_block(page, "python", "asyncio.run(main())"), "utf-8")
    (root / "dispatch.toml").write_text(
        _code_block(page, "toml", "[extensions.slow-jobs]"), "utf-8"
    )
    ran = _run([sys.executable, "app.py"], cwd=root, env=env)
    lines = sorted(
        re.sub(r"(job \w+) \(\w+\)", r"\1 (id)", line) for line in ran.stderr.splitlines()
    )
    prefix = "dispatch_ext_slow_jobs.extension: "
    assert lines[:3] == [
        prefix + "2 job(s) completed, 1 failed",
        prefix + "job charge_card (id) failed: card declined",
        prefix + "job charge_card (id) retry 1 after: card declined",
    ], ran.stderr
    # Only the 0.8 s image is slow (slow_after = 0.5 in dispatch.toml); never the 0.1 s one.
    assert re.fullmatch(re.escape(prefix) + r"job resize_image \(id\) took \d+\.\d{3} s", lines[3])
    assert len(lines) == 4, ran.stderr

    silent = _run([sys.executable, "app.py"], root, {**env, "DISPATCH_EXT_DISABLE": "slow-jobs"})
    assert silent.stderr == ""
