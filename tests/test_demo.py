"""``dispatch-ext demo`` run as a user runs it: a subprocess, its output read back."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

from dispatch_ext import HOOK_NAMES
from dispatch_ext.testing import make_distribution

BUILT_INS = ("audit", "metrics", "webhooks")


def run_demo(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``dispatch-ext demo --seconds 1.5 --dir <tmp>/work --no-color ARGS`` in a subprocess."""
    script = Path(sys.executable).with_name("dispatch-ext")
    command = [str(script)]
    if not script.exists():
        command = [sys.executable, "-c", "from dispatch_ext.cli import main; main()"]
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
    environ.update(env or {})
    return subprocess.run(
        [
            *command,
            "demo",
            "--seconds",
            "1.5",
            "--dir",
            str(tmp_path / "work"),
            "--no-color",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,  # no dispatch.toml there
        env=environ,
        check=False,
    )


def events_table(output: str) -> dict[str, dict[str, int | None]]:
    """The 'Events per hook and extension' table: {extension: {hook: calls or None}}."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Events per hook"))
    header = lines[start + 1].split()
    assert header[0] == "hook"
    columns = header[1:]
    table: dict[str, dict[str, int | None]] = {name: {} for name in columns}
    for line in lines[start + 3 : start + 3 + len(HOOK_NAMES)]:
        hook, *cells = line.split()
        for name, cell in zip(columns, cells, strict=True):
            table[name][hook] = None if cell == "-" else int(cell)
    return table


def metric_values(output: str) -> dict[str, str]:
    """The metrics table: {instrument: value text}."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Metrics (OpenTelemetry"))
    rows = {}
    for line in lines[start + 3 :]:
        if not line.startswith("  ") or not line.strip():
            break
        name, _kind, _series, value = re.split(r"\s{2,}", line.strip(), maxsplit=3)
        rows[name] = value
    return rows


def test_demo_fires_every_hook_and_feeds_every_built_in(tmp_path: Path) -> None:
    result = run_demo(tmp_path)
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    assert "Everything happened as expected:" in output
    assert "\x1b[" not in output  # --no-color

    table = events_table(output)
    assert list(table)[:1] == ["demo"]
    assert set(BUILT_INS) <= set(table), f"built-ins missing from {list(table)}"
    demo = table["demo"]
    assert list(demo) == list(HOOK_NAMES)
    assert all(demo[hook] for hook in HOOK_NAMES), demo
    assert demo["on_shutdown"] == 1
    assert demo["on_job_dlq"] == demo["on_job_failed"] == 1
    assert demo["on_workflow_completed"] == demo["on_workflow_failed"] == 1
    # Every built-in heard the same events as the demo's counter, hook by hook.
    for name in BUILT_INS:
        for hook, calls in table[name].items():
            assert calls in (None, demo[hook]), (name, hook, calls, demo[hook])

    # The audit log: one JSON line per event the audit extension heard.
    audit = tmp_path / "work" / "audit.jsonl"
    assert f"{audit} (" in output
    lines = audit.read_text(encoding="utf-8").splitlines()
    assert len(lines) == sum(c or 0 for c in table["audit"].values())
    actions = [json.loads(line)["action"] for line in lines]
    assert "job.dlq" in actions
    assert actions[-1] == "engine.shutdown"

    # The metrics table: each lifecycle counter equals the count of its hook.
    metrics = metric_values(output)
    for hook in HOOK_NAMES[:-1]:
        name = "dispatch." + hook.removeprefix("on_").replace("_", ".", 1)
        assert metrics[name].split()[0] == str(demo[hook]), (name, metrics.get(name))

    # Webhooks: every event the extension accepted arrived, and every one verified.
    delivered = re.search(r"delivered (\d+) of (\d+) events to http://127\.0\.0\.1:\d+/", output)
    verified = re.search(r"verified\s+(\d+) of (\d+) with standardwebhooks", output)
    assert delivered is not None, output
    assert verified is not None, output
    sent = sum(c or 0 for hook, c in table["webhooks"].items() if hook != "on_shutdown")
    assert int(delivered[1]) == int(delivered[2]) == sent > 0
    assert int(verified[1]) == int(verified[2]) == int(delivered[1])


def test_demo_runs_without_the_built_ins_and_says_so(tmp_path: Path) -> None:
    result = run_demo(tmp_path, "--quiet", env={"DISPATCH_EXT_DISABLE": "metrics,webhooks"})
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    assert re.search(r"^  metrics\s+disabled", output, re.M), output
    assert re.search(r"^  webhooks\s+disabled", output, re.M), output
    assert "the webhooks extension is not loaded" in output
    assert "the metrics extension is not loaded" in output
    table = events_table(output)
    assert set(table) == {"demo", "audit"}
    assert all(table["demo"][hook] for hook in HOOK_NAMES)
    assert " started  " not in output  # --quiet: no line per event


def site_without(tmp_path: Path, hidden: str) -> Path:
    """A copy (by symlinks) of this environment's site-packages without one distribution.

    Everything whose name starts with ``hidden`` (its dist-info, its package, the ``.pth``
    file and finder of an editable install) is left out, as if it had never been installed.
    """
    view = tmp_path / "site-packages"
    view.mkdir()
    purelib = Path(sysconfig.get_paths()["purelib"])
    for entry in purelib.iterdir():
        key = entry.name.lower().lstrip("_").removeprefix("editable__").lstrip("._")
        if not key.startswith(hidden):
            (view / entry.name).symlink_to(entry)
    return view


def test_demo_says_which_built_in_is_missing_and_how_to_install_it(tmp_path: Path) -> None:
    view = site_without(tmp_path, "dispatch_ext_webhooks")
    boot = (
        "import site, sys; site.addsitedir(sys.argv.pop(1)); "
        "from dispatch_ext.cli import main; main(prog_name='dispatch-ext')"
    )
    environ = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCH_")}
    result = subprocess.run(
        [
            sys.executable,
            "-S",
            "-c",
            boot,
            str(view),
            "demo",
            "--seconds",
            "0.5",
            "--quiet",
            "--dir",
            str(tmp_path / "work"),
            "--no-color",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=environ,
        check=False,
    )
    output = result.stdout
    assert result.returncode == 0, output + result.stderr
    assert re.search(
        r"^  webhooks\s+not installed: pip install dispatch-ext-webhooks$",
        output,
        re.M,
    ), output
    assert "pip install -e plugins/dispatch-ext-webhooks" in output
    assert set(events_table(output)) == {"demo", "audit", "metrics"}
    assert "the webhooks extension is not loaded" in output


def test_demo_fails_when_an_extension_misbehaves(tmp_path: Path) -> None:
    site = tmp_path / "site"
    make_distribution(
        site,
        "dispatch-ext-grumpy",
        entry_points={"grumpy": "grumpy_ext:Grumpy"},
        modules={
            "grumpy_ext.py": (
                "class Grumpy:\n"
                "    def on_job_completed(self, job):\n"
                "        raise RuntimeError('grumpy does not like ' + job.name)\n"
            )
        },
    )
    pythonpath = os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))
    result = run_demo(tmp_path, "--quiet", env={"PYTHONPATH": pythonpath})
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Something unexpected happened:" in result.stdout
    assert "extension 'grumpy' failed" in result.stdout
    assert "grumpy does not like" in result.stderr  # the registry logs each failure
    # One extension's fault breaks nothing else: every hook still fired.
    assert all(events_table(result.stdout)["demo"][hook] for hook in HOOK_NAMES)
