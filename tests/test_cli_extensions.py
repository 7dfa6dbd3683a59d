"""``dispatch-ext list | hooks | check | info`` on real installed distributions."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from dispatch_ext import HOOK_NAMES, hookspecs
from dispatch_ext.cli import main
from dispatch_ext.cli.extensions import hooks_summary
from dispatch_ext.testing.distributions import make_distribution, on_sys_path

SWITCHES = (
    "DISPATCH_CONFIG",
    "DISPATCH_EXT_AUTOLOAD",
    "DISPATCH_EXT_ENABLE",
    "DISPATCH_EXT_DISABLE",
    "DISPATCH_EXT_STRICT",
)

ALPHA = '''
    from dispatch_ext import hookimpl

    class Alpha:
        """Alpha counts completed and failed jobs.

        More text that is not the first line.
        """

        def on_job_completed(self, job, elapsed):
            pass

        def on_job_failed(self, job, error):
            pass
'''

BRAVO = """
    import not_installed_package_for_dispatch_tests  # the dependency is missing

    class Bravo:
        def on_job_completed(self, job):
            pass
"""

CHARLIE = '''
    from dispatch_ext import hookimpl

    class Charlie:
        """Charlie posts events to an endpoint."""

        def __init__(self, endpoint=None):
            self.endpoint = endpoint

        @property
        def status_detail(self):
            if self.endpoint is None:
                return "inactive: no endpoint configured"
            return f"posting to {self.endpoint}"

        @hookimpl(tryfirst=True)
        def on_job_completed(self, job):
            pass

        async def on_shutdown(self):
            pass

    def make(**settings):
        return Charlie(**settings)
'''

TYPO = """
    class Typo:
        def on_job_complete(self, job):
            pass
"""

GAMMA = """
    class Gamma:
        def on_job_started(self, job):
            pass
"""

WORLD: dict[str, tuple[str, dict[str, str], dict[str, str]]] = {
    # distribution -> (version, entry points, modules)
    "dispatch-ext-alpha": ("1.2", {"alpha": "alpha_ext:Alpha"}, {"alpha_ext.py": ALPHA}),
    "dispatch-ext-bravo": ("0.3", {"bravo": "bravo_ext:Bravo"}, {"bravo_ext.py": BRAVO}),
    "dispatch-ext-charlie": ("2.0", {"charlie": "charlie_ext:make"}, {"charlie_ext.py": CHARLIE}),
    "dispatch-ext-typo": ("1.0", {"typo": "typo_ext:Typo"}, {"typo_ext.py": TYPO}),
    "dispatch-ext-gamma-one": ("1.0", {"gamma": "gamma_one:Gamma"}, {"gamma_one.py": GAMMA}),
    "dispatch-ext-gamma-two": ("1.0", {"gamma": "gamma_two:Gamma"}, {"gamma_two.py": GAMMA}),
}


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Every distribution of WORLD installed in a folder on sys.path; a clean environment."""
    for variable in SWITCHES:
        monkeypatch.delenv(variable, raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # no ./dispatch.toml unless a test writes one
    root = tmp_path / "site-packages"
    for dist, (version, entry_points, modules) in WORLD.items():
        make_distribution(root, dist, version, entry_points=entry_points, modules=modules)
    with on_sys_path(root):
        yield root


def run(*args: str, enable: str | None = "alpha,bravo,charlie", **env: str) -> Result:
    """Invoke the CLI with an allowlist, so extensions installed elsewhere stay out."""
    environ = dict(env)
    if enable is not None:
        environ["DISPATCH_EXT_ENABLE"] = enable
    return CliRunner(env=environ).invoke(main, list(args), catch_exceptions=False)


# -- list -------------------------------------------------------------------------------


@pytest.mark.usefixtures("site")
def test_list_json_has_exactly_the_documented_keys_in_load_order() -> None:
    result = run("list", "--json")
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert [e["name"] for e in listed] == ["alpha", "bravo", "charlie"]
    for entry in listed:
        assert list(entry) == ["name", "distribution", "version", "status", "hooks", "error"]
    alpha, bravo, charlie = listed
    assert alpha == {
        "name": "alpha",
        "distribution": "dispatch-ext-alpha",
        "version": "1.2",
        "status": "loaded",
        "hooks": ["on_job_completed", "on_job_failed"],
        "error": None,
    }
    assert bravo["status"] == "failed"
    assert bravo["hooks"] == []
    assert "bravo_ext:Bravo" in bravo["error"]
    assert "ModuleNotFoundError" in bravo["error"]
    assert "not_installed_package_for_dispatch_tests" in bravo["error"]
    assert charlie["status"] == "loaded"
    assert charlie["hooks"] == ["on_job_completed", "on_shutdown"]


@pytest.mark.usefixtures("site")
def test_list_table_shows_status_hooks_errors_and_details() -> None:
    result = run("list")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["NAME", "DISTRIBUTION", "VERSION", "STATUS", "HOOKS"]
    status_column = lines[0].index("STATUS")
    rows = {line.split()[0]: line for line in lines[1:] if line and not line.startswith(" ")}
    assert rows["alpha"][status_column:].startswith("loaded")
    assert rows["bravo"][status_column:].startswith("failed")
    assert "2: job_completed, job_failed" in rows["alpha"]
    assert "inactive: no endpoint configured" in result.stdout
    error_line = next(line for line in lines if line.startswith("  error:"))
    assert "bravo_ext:Bravo" in error_line
    assert "3 extensions: 2 loaded, 1 failed (" in result.stdout
    assert "dispatch-ext check" in result.stdout


@pytest.mark.usefixtures("site")
def test_status_detail_is_not_a_json_key() -> None:
    listed = json.loads(run("list", "--json").stdout)
    assert all("status_detail" not in entry for entry in listed)


@pytest.mark.usefixtures("site")
def test_disabled_extensions_only_with_all() -> None:
    default = json.loads(run("list", "--json", DISPATCH_EXT_DISABLE="charlie").stdout)
    assert [e["name"] for e in default] == ["alpha", "bravo"]

    every = json.loads(run("list", "--json", "--all", DISPATCH_EXT_DISABLE="charlie").stdout)
    statuses = {e["name"]: e["status"] for e in every}
    assert statuses["charlie"] == "disabled"
    assert {"alpha", "bravo", "charlie", "gamma", "typo"} <= set(statuses)  # allowlist-disabled

    table = run("list", DISPATCH_EXT_DISABLE="charlie").stdout
    assert "charlie" not in table
    assert "disabled not shown; --all shows them" in table


def test_config_file_order_and_settings(site: Path, tmp_path: Path) -> None:
    config = tmp_path / "custom.toml"
    config.write_text(
        '[dispatch]\nenable = ["alpha", "charlie"]\norder = ["charlie"]\n\n'
        '[extensions.charlie]\nendpoint = "http://127.0.0.1:9/hook"\n',
        encoding="utf-8",
    )
    result = run("--config", str(config), "list", enable=None)
    assert result.exit_code == 0
    rows = [line for line in result.stdout.splitlines()[1:] if line and line[0] != " "]
    assert [row.split()[0] for row in rows[:2]] == ["charlie", "alpha"]
    assert "posting to http://127.0.0.1:9/hook" in result.stdout

    from_env = run("list", "--json", enable=None, DISPATCH_CONFIG=str(config))
    assert [e["name"] for e in json.loads(from_env.stdout)] == ["charlie", "alpha"]


def test_dispatch_toml_in_the_current_directory_is_read(site: Path) -> None:
    Path("dispatch.toml").write_text('[dispatch]\nenable = ["alpha"]\n', encoding="utf-8")
    listed = json.loads(run("list", "--json", enable=None).stdout)
    assert [e["name"] for e in listed] == ["alpha"]


@pytest.mark.usefixtures("site")
def test_a_broken_config_file_is_reported_not_raised(tmp_path: Path) -> None:
    config = tmp_path / "broken.toml"
    config.write_text("[dispatch]\nenabel = ['alpha']\n", encoding="utf-8")
    result = run("--config", str(config), "list")
    assert result.exit_code == 1
    assert str(config) in result.output
    assert "did you mean 'enable'" in result.output


@pytest.mark.usefixtures("site")
def test_the_summary_lists_statuses_in_a_fixed_order() -> None:
    # In load order alpha (disabled) comes first, then bravo (failed), then charlie.
    result = run("list", "--all", DISPATCH_EXT_DISABLE="alpha")
    assert result.exit_code == 0
    assert re.search(r"\d+ extensions: 1 loaded, 1 failed, \d+ disabled\.", result.stdout)

    conflict = run(
        "list", "--all", enable="gamma,dispatch-ext-typo,alpha", **{"DISPATCH_EXT_DISABLE": "alpha"}
    )
    assert re.search(
        r"\d+ extensions: 1 loaded, 1 invalid, 1 conflict, \d+ disabled\.", conflict.stdout
    )


@pytest.mark.usefixtures("site")
def test_list_warns_about_a_misspelled_name_in_the_switches() -> None:
    result = run("list", "--all", enable="alpah")
    assert result.exit_code == 0
    assert result.stderr == (
        "Warning: DISPATCH_EXT_ENABLE names 'alpah', but no installed extension has that "
        "entry-point or distribution name; did you mean 'alpha'?\n"
    )
    assert "alpha" in result.stdout  # the table is still printed, on stdout only

    listed = run("list", "--json", enable="alpha,charlie", DISPATCH_EXT_DISABLE="charlei")
    assert [e["name"] for e in json.loads(listed.stdout)] == ["alpha", "charlie"]
    assert "DISPATCH_EXT_DISABLE names 'charlei'" in listed.stderr
    assert "did you mean 'charlie'?" in listed.stderr


@pytest.mark.usefixtures("site")
def test_a_directory_in_dispatch_config_is_blamed_on_the_variable(tmp_path: Path) -> None:
    (tmp_path / "dispatch.toml").write_text("", encoding="utf-8")
    result = run("list", DISPATCH_CONFIG=str(tmp_path))
    assert result.exit_code == 1
    assert "--config" not in result.stderr
    assert f"the environment variable DISPATCH_CONFIG names {tmp_path}, which is a " in (
        result.stderr
    )
    assert f"(such as {tmp_path / 'dispatch.toml'})" in result.stderr

    missing = run("list", DISPATCH_CONFIG=str(tmp_path / "gone.toml"))
    assert missing.exit_code == 1
    assert "DISPATCH_CONFIG names" in missing.stderr
    assert "which does not exist; create it, or point DISPATCH_CONFIG at" in missing.stderr


@pytest.mark.usefixtures("site")
def test_a_wrong_config_option_is_blamed_on_the_option(tmp_path: Path) -> None:
    missing = run("--config", str(tmp_path / "gone.toml"), "list")
    assert missing.exit_code == 1
    assert f"--config names {tmp_path / 'gone.toml'}, which does not exist" in missing.stderr
    assert "DISPATCH_CONFIG" not in missing.stderr

    directory = run("--config", str(tmp_path), "list")
    assert directory.exit_code == 2
    assert "Invalid value for '--config'" in directory.stderr
    assert "is a directory, not a file; pass the path of a TOML file" in directory.stderr


@pytest.mark.usefixtures("site")
def test_autoload_off_lists_nothing_and_says_why() -> None:
    result = run("list", DISPATCH_EXT_AUTOLOAD="0")
    assert result.exit_code == 0
    assert "Autoload is off" in result.stdout
    assert json.loads(run("list", "--json", DISPATCH_EXT_AUTOLOAD="0").stdout) == []


@pytest.mark.usefixtures("site")
def test_strict_mode_does_not_turn_the_listing_into_a_traceback() -> None:
    result = run("list", "--json", DISPATCH_EXT_STRICT="1")
    assert result.exit_code == 0
    assert [e["status"] for e in json.loads(result.stdout)] == ["loaded", "failed", "loaded"]
    assert os.environ.get("DISPATCH_EXT_STRICT") is None


def test_hooks_summary_abbreviates() -> None:
    assert hooks_summary([]) == "-"
    assert hooks_summary(HOOK_NAMES) == "all 13"
    assert hooks_summary(["on_job_failed", "on_shutdown"]) == "2: job_failed, shutdown"
    long = hooks_summary(HOOK_NAMES[:12])
    assert long.startswith("12: job_enqueued, job_started")
    assert long.endswith("more")
    assert len(long) < 60


# -- hooks ------------------------------------------------------------------------------


@pytest.mark.usefixtures("site")
def test_hooks_json_lists_every_hook_with_implementers_in_call_order() -> None:
    result = run("hooks", "--json")
    assert result.exit_code == 0
    rows = json.loads(result.stdout)
    assert [row["hook"] for row in rows] == list(HOOK_NAMES)
    for row in rows:
        assert list(row) == ["hook", "description", "implementers"]
        doc = getattr(hookspecs, row["hook"]).__doc__
        assert row["description"] == doc.strip().splitlines()[0]
    by_hook = {row["hook"]: row["implementers"] for row in rows}
    assert by_hook["on_job_completed"] == ["charlie", "alpha"]  # charlie is tryfirst
    assert by_hook["on_job_failed"] == ["alpha"]
    assert by_hook["on_shutdown"] == ["charlie"]
    assert by_hook["on_cron_fired"] == []


@pytest.mark.usefixtures("site")
def test_hooks_table() -> None:
    result = run("hooks")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["HOOK", "IMPLEMENTERS", "FIRES", "WHEN"]
    assert [line.split()[0] for line in lines[1:]] == list(HOOK_NAMES)
    completed = next(line for line in lines if line.startswith("on_job_completed "))
    assert "charlie, alpha" in completed
    assert "The handler returned and the completion is stored." in completed


# -- check ------------------------------------------------------------------------------


@pytest.mark.usefixtures("site")
def test_check_fails_on_a_failed_extension_and_says_what_to_do() -> None:
    result = run("check")
    assert result.exit_code == 1
    assert "FAILED: bravo (dispatch-ext-bravo 0.3, bravo_ext:Bravo)" in result.stdout
    assert "why: " in result.stdout
    assert "ModuleNotFoundError" in result.stdout
    assert "fix: " in result.stdout
    assert "DISPATCH_EXT_DISABLE=bravo" in result.stdout
    assert "1 of 3 enabled extensions did not load (1 failed); 2 loaded." in result.stdout


@pytest.mark.usefixtures("site")
def test_check_passes_when_everything_loads() -> None:
    result = run("check", enable="alpha,charlie,bravo", DISPATCH_EXT_DISABLE="bravo")
    assert result.exit_code == 0
    # bravo, and every extension outside the allowlist, is disabled
    assert re.fullmatch(
        r"OK: 2 extensions loaded \(alpha, charlie\); \d+ disabled\.\n", result.stdout
    )


@pytest.mark.usefixtures("site")
def test_check_reports_conflicts_naming_both_distributions() -> None:
    result = run("check", enable="gamma")
    assert result.exit_code == 1
    assert "CONFLICT: gamma (dispatch-ext-gamma-two 1.0, gamma_two:Gamma)" in result.stdout
    assert "dispatch-ext-gamma-one" in result.stdout
    assert "DISPATCH_EXT_DISABLE=dispatch-ext-gamma-two" in result.stdout
    fix = next(line for line in result.stdout.splitlines() if line.startswith("  fix: "))
    assert fix == (
        "  fix: dispatch-ext-gamma-one provides 'gamma'. To keep it: uninstall "
        "dispatch-ext-gamma-two, or set DISPATCH_EXT_DISABLE=dispatch-ext-gamma-two, which "
        "switches off every extension of dispatch-ext-gamma-two. To use "
        "dispatch-ext-gamma-two's 'gamma' instead: uninstall dispatch-ext-gamma-one, or set "
        "DISPATCH_EXT_DISABLE=dispatch-ext-gamma-one, which switches off every extension of "
        "dispatch-ext-gamma-one"
    )


@pytest.mark.parametrize(
    ("toml", "where"),
    [
        ('[dispatch]\nenable = ["alpha", "nosuch"]\n', "[dispatch] enable"),
        ('[dispatch]\ndisable = ["nosuch"]\n', "[dispatch] disable"),
        ('[dispatch]\norder = ["nosuch"]\n', "[dispatch] order"),
        ("[dispatch.timeouts]\nnosuch = 1.0\n", "[dispatch.timeouts]"),
        ("[extensions.nosuch]\nkey = 1\n", "[extensions.nosuch]"),
    ],
    ids=["enable", "disable", "order", "timeouts", "settings"],
)
def test_check_fails_on_a_name_in_the_configuration_that_is_not_installed(
    site: Path, toml: str, where: str
) -> None:
    Path("dispatch.toml").write_text(toml, encoding="utf-8")
    result = run("check", enable=None if "enable" in toml else "alpha")
    assert result.exit_code == 1
    path = Path("dispatch.toml").resolve()
    assert f"UNKNOWN NAME: 'nosuch' in {where} in {path}\n" in result.stdout
    assert "no installed extension has that entry-point or distribution name" in result.stdout
    assert "the configuration names 1 extension that is not installed" in result.stdout
    assert not result.stdout.startswith("OK")


@pytest.mark.usefixtures("site")
def test_check_suggests_the_closest_installed_name() -> None:
    result = run("check", enable="alpha,charlei")
    assert result.exit_code == 1
    assert "UNKNOWN NAME: 'charlei' in DISPATCH_EXT_ENABLE\n" in result.stdout
    assert "  fix: did you mean 'charlie'? Correct the name, or remove it\n" in result.stdout
    assert result.stdout.endswith(
        "the configuration names 1 extension that is not installed; 1 enabled extension; "
        "1 loaded.\n"
    )

    by_distribution = run("check", enable="dispatch-ext-alpha,dispatch_ext_charlie")
    assert by_distribution.exit_code == 0, by_distribution.stdout


@pytest.mark.usefixtures("site")
def test_check_reports_invalid_extensions_with_the_suggestion() -> None:
    result = run("check", enable="typo")
    assert result.exit_code == 1
    assert "INVALID: typo" in result.stdout
    assert "did you mean on_job_completed?" in result.stdout


@pytest.mark.usefixtures("site")
def test_check_with_nothing_installed() -> None:
    result = run("check", DISPATCH_EXT_AUTOLOAD="0")
    assert result.exit_code == 0
    assert result.stdout.strip() == "OK: no extensions are installed."


@pytest.mark.usefixtures("site")
def test_check_in_strict_mode_still_reports() -> None:
    result = run("check", DISPATCH_EXT_STRICT="1")
    assert result.exit_code == 1
    assert "FAILED: bravo" in result.stdout


def test_check_exit_status_from_a_real_process(site: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in SWITCHES}
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    env["DISPATCH_EXT_ENABLE"] = "alpha,bravo"
    code = "from dispatch_ext.cli import main; main()"
    failing = subprocess.run(
        [sys.executable, "-c", code, "check"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert failing.returncode == 1, failing.stderr
    assert "FAILED: bravo" in failing.stdout
    assert "Traceback" not in failing.stderr  # the report is not repeated as log noise

    env["DISPATCH_EXT_ENABLE"] = "alpha"
    passing = subprocess.run(
        [sys.executable, "-c", code, "check"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert passing.returncode == 0, passing.stdout + passing.stderr
    assert passing.stdout.startswith("OK: 1 extension loaded (alpha); ")


# -- info -------------------------------------------------------------------------------


@pytest.mark.usefixtures("site")
def test_info_shows_the_full_record() -> None:
    result = run("info", "charlie")
    assert result.exit_code == 0
    fields = {
        label.strip(): value.strip()
        for label, _, value in (line.partition(":") for line in result.stdout.splitlines())
    }
    assert fields["name"] == "charlie"
    assert fields["description"] == "Charlie posts events to an endpoint."
    assert fields["entry point"] == "charlie_ext:make"
    assert fields["distribution"] == "dispatch-ext-charlie 2.0"
    assert fields["status"] == "loaded"
    assert fields["detail"] == "inactive: no endpoint configured"
    assert fields["hooks (2)"] == "on_job_completed, on_shutdown"
    assert fields["error"] == "-"


@pytest.mark.usefixtures("site")
def test_info_json() -> None:
    result = run("info", "alpha", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "name": "alpha",
        "value": "alpha_ext:Alpha",
        "distribution": "dispatch-ext-alpha",
        "version": "1.2",
        "status": "loaded",
        "error": None,
        "hooks": ["on_job_completed", "on_job_failed"],
        "status_detail": None,
        "description": "Alpha counts completed and failed jobs.",
    }


@pytest.mark.usefixtures("site")
def test_info_of_a_failed_extension_by_distribution_name() -> None:
    info = json.loads(run("info", "dispatch_ext_bravo", "--json").stdout)
    assert info["name"] == "bravo"
    assert info["status"] == "failed"
    assert "ModuleNotFoundError" in info["error"]
    assert info["description"] is None


@pytest.mark.usefixtures("site")
def test_info_of_a_disabled_extension() -> None:
    info = json.loads(run("info", "typo", "--json").stdout)  # outside the allowlist
    assert info["status"] == "disabled"
    assert info["hooks"] == []


@pytest.mark.usefixtures("site")
def test_info_shows_every_claim_of_a_conflicting_name() -> None:
    result = run("info", "gamma", enable="gamma")
    assert result.exit_code == 0
    assert "dispatch-ext-gamma-one 1.0" in result.stdout
    assert "dispatch-ext-gamma-two 1.0" in result.stdout
    assert "conflict" in result.stdout


@pytest.mark.usefixtures("site")
def test_info_of_an_unknown_name_suggests_the_closest() -> None:
    result = run("info", "alpah")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "no extension named 'alpah'" in result.stderr
    assert "did you mean 'alpha'?" in result.stderr
    assert "dispatch-ext list --all" in result.stderr
