"""Discovery from real distributions (``*.dist-info`` folders) put on ``sys.path``.

The extensions installed in the environment (the built-in plugins) are also visible, so
every test either sets an allowlist or looks only at the names it installed.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import dispatch_ext
from dispatch_ext import Job, Registry
from dispatch_ext import _discovery_scan as scan_module
from dispatch_ext.config import Config, load_config
from dispatch_ext.discovery import GROUP, ExtensionRecord, clear_cache, discover, load_into
from dispatch_ext.errors import ExtensionLoadError
from dispatch_ext.testing.distributions import make_distribution, on_sys_path

EXTENSION = """\
class Extension:
    def __init__(self, **settings):
        self.settings = settings
        self.seen = []

    def on_job_completed(self, job, elapsed):
        self.seen.append(job.id)
"""

EXPLODES_ON_IMPORT = """\
raise RuntimeError("this module must never be imported")
"""


def install(root: Path, dist: str, name: str, module: str, source: str = EXTENSION) -> Path:
    """One distribution with one extension ``name = module:Extension``."""
    return make_distribution(
        root, dist, entry_points={name: f"{module}:Extension"}, modules={f"{module}.py": source}
    )


def mine(records: list[ExtensionRecord]) -> list[ExtensionRecord]:
    """The records of the extensions these tests install (all named ``t-*``)."""
    return [record for record in records if record.name.startswith("t-")]


def find(config: Config, *, refresh: bool = False) -> list[ExtensionRecord]:
    return mine(discover(config, refresh=refresh))


def load(registry: Registry, config: Config) -> list[ExtensionRecord]:
    return mine(registry.load_entrypoints(config))


def by_name(records: list[ExtensionRecord]) -> dict[str, ExtensionRecord]:
    return {record.name: record for record in records}


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Path]:
    """An empty folder playing site-packages, on ``sys.path`` for the test."""
    root = tmp_path / "site"
    root.mkdir()
    with on_sys_path(root):
        yield root


@pytest.fixture
def registry() -> Iterator[Registry]:
    reg = Registry(strict=False)
    yield reg
    reg.close()


def _completed_job() -> dict[str, object]:
    return {"job": Job(id="job-1", name="send"), "elapsed": dt.timedelta(seconds=1)}


# -- faults stay local --------------------------------------------------------------------


def _install_abc(site: Path) -> Config:
    install(site, "t-ext-a", "t-a", "t_a_mod")
    install(site, "t-ext-b", "t-b", "t_b_mod", "import t_not_installed_dep\n" + EXTENSION)
    install(site, "t-ext-c", "t-c", "t_c_mod")
    return Config(enable=("t-a", "t-b", "t-c"))


def test_a_broken_import_fails_alone_and_the_others_load_and_hear_events(
    site: Path, registry: Registry, caplog: pytest.LogCaptureFixture
) -> None:
    config = _install_abc(site)

    with caplog.at_level(logging.WARNING, logger="dispatch_ext"):
        records = load(registry, config)

    assert [(r.name, r.status) for r in records] == [
        ("t-a", "loaded"),
        ("t-b", "failed"),
        ("t-c", "loaded"),
    ]
    failed = records[1]
    assert "t-b = t_b_mod:Extension" in (failed.error or "")
    assert "ModuleNotFoundError" in (failed.error or "")
    assert "t_not_installed_dep" in (failed.error or "")
    assert failed.hooks == ()
    assert failed.extension is None
    assert records[0].hooks == ("on_job_completed",)
    assert any("t_b_mod:Extension" in r.getMessage() for r in caplog.records)

    assert [name for name, _ in registry.extensions()] == ["t-a", "t-c"]
    registry.emit("on_job_completed", **_completed_job())
    assert records[0].extension.seen == ["job-1"]
    assert records[2].extension.seen == ["job-1"]
    assert mine(registry.records) == records


def test_a_load_failure_is_one_log_line_and_the_traceback_is_debug_only(
    site: Path, caplog: pytest.LogCaptureFixture
) -> None:
    source = (
        "class Extension:\n    def __init__(self):\n        raise OSError('no disk\\nat all')\n"
    )
    make_distribution(
        site,
        "t-noisy",
        entry_points={"t-noisy": "t_noisy_mod:Extension"},
        modules={"t_noisy_mod.py": source},
    )

    with caplog.at_level(logging.DEBUG, logger="dispatch_ext"):
        find(Config(enable=("t-noisy",)))

    ours = [r for r in caplog.records if "t-noisy" in r.getMessage()]
    warnings = [r for r in ours if r.levelno == logging.WARNING]
    assert [r.getMessage() for r in warnings] == [
        "extension 't-noisy' (t_noisy_mod:Extension) failed to load: OSError: no disk at all; "
        "run 'dispatch-ext check' for the cause and the fix"
    ]
    assert warnings[0].exc_info is None
    [debug] = [r for r in ours if r.levelno == logging.DEBUG]
    assert debug.exc_info is not None
    assert isinstance(debug.exc_info[1], OSError)


@pytest.mark.parametrize("switch", ["config", "environment"])
def test_strict_mode_raises_after_trying_everything(
    site: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch, switch: str
) -> None:
    config = _install_abc(site)
    if switch == "config":
        config = Config(enable=config.enable, strict=True)
    else:  # read by load_config(), as discover() without arguments does
        monkeypatch.chdir(site)  # no dispatch.toml here
        monkeypatch.setenv("DISPATCH_EXT_STRICT", "1")
        monkeypatch.setenv("DISPATCH_EXT_ENABLE", "t-a,t-b,t-c")
        config = load_config()
    assert config.strict

    with pytest.raises(ExtensionLoadError) as caught:
        discover() if switch == "environment" else discover(config)

    message = str(caught.value)
    assert "t-b (failed)" in message
    assert "t_not_installed_dep" in message
    assert "t-a" not in message.replace("t-b", "")
    assert [r.name for r in caught.value.records] == ["t-b"]
    assert "t_a_mod" in sys.modules
    assert "t_c_mod" in sys.modules  # scanned to the end before raising

    with pytest.raises(ExtensionLoadError):
        load(registry, config)
    assert len(registry) == 0


def test_an_explicit_config_decides_strictness_over_the_environment(
    site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _install_abc(site)  # strict=False, as a listing command builds it
    monkeypatch.setenv("DISPATCH_EXT_STRICT", "1")

    records = find(config)

    assert [r.status for r in records] == ["loaded", "failed", "loaded"]


def test_a_misspelled_attribute_fails_with_attribute_error_and_a_suggestion(site: Path) -> None:
    make_distribution(
        site,
        "t-typo",
        entry_points={"t-typo": "t_typo_mod:Extnsion", "t-fine": "t_typo_mod:Extension"},
        modules={"t_typo_mod.py": EXTENSION},
    )

    records = by_name(find(Config(enable=("t-typo",))))

    typo = records["t-typo"]
    assert typo.status == "failed"
    assert "t_typo_mod:Extnsion" in (typo.error or "")
    assert "AttributeError" in (typo.error or "")
    assert "did you mean 'Extension'?" in (typo.error or "")
    # the distribution name matched the allowlist, so its other entry loaded
    assert records["t-fine"].status == "loaded"


@pytest.mark.parametrize(
    ("source", "value", "expected"),
    [
        ("def broken(:\n", "t_err_mod:Extension", "SyntaxError"),
        ("raise RuntimeError('boom at import')\n", "t_err_mod:Extension", "boom at import"),
        ("import sys\nsys.exit(3)\n", "t_err_mod:Extension", "SystemExit"),
        (
            "class Extension:\n    def __init__(self):\n        raise OSError('no disk')\n",
            "t_err_mod:Extension",
            "building the extension (class 'Extension') raised OSError: no disk",
        ),
        ("def make():\n    return None\n", "t_err_mod:make", "the factory returned None"),
        (EXTENSION, "t_err_mod:Extension extra words!", "is not an entry-point value"),
    ],
    ids=["syntax", "import-raises", "sys-exit", "init-raises", "factory-none", "bad-value"],
)
def test_any_exception_while_loading_marks_only_that_extension_failed(
    site: Path, source: str, value: str, expected: str
) -> None:
    make_distribution(
        site, "t-err", entry_points={"t-err": value}, modules={"t_err_mod.py": source}
    )
    install(site, "t-ok", "t-ok", "t_ok_mod")

    records = by_name(find(Config(enable=("t-err", "t-ok"))))

    assert records["t-err"].status == "failed"
    assert expected in (records["t-err"].error or "")
    assert records["t-ok"].status == "loaded"


def test_invalid_hooks_are_reported_and_not_registered(site: Path, registry: Registry) -> None:
    install(
        site,
        "t-bad-hook",
        "t-bad-hook",
        "t_bad_hook_mod",
        "class Extension:\n    def on_job_complete(self, job):\n        pass\n",
    )
    install(
        site,
        "t-bad-arg",
        "t-bad-arg",
        "t_bad_arg_mod",
        "class Extension:\n    def on_job_failed(self, job, eror):\n        pass\n",
    )
    install(site, "t-good", "t-good", "t_good_mod")
    config = Config(enable=("t-bad-hook", "t-bad-arg", "t-good"))

    records = by_name(load(registry, config))

    assert records["t-bad-hook"].status == "invalid"
    assert "did you mean on_job_completed?" in (records["t-bad-hook"].error or "")
    assert records["t-bad-arg"].status == "invalid"
    assert "'eror'" in (records["t-bad-arg"].error or "")
    assert "'error'" in (records["t-bad-arg"].error or "")
    assert [name for name, _ in registry.extensions()] == ["t-good"]


def test_a_malformed_entry_points_file_breaks_only_its_own_distribution(site: Path) -> None:
    install(site, "t-sound", "t-sound", "t_sound_mod")
    make_distribution(
        site, "t-garbled", extra_entry_point_lines=f"[{GROUP}]\nt-garbled t_garbled_mod:X\n"
    )
    make_distribution(
        site, "t-other-tool", extra_entry_point_lines="[console_scripts]\nno equals sign here\n"
    )

    records = find(Config(enable=("t-sound", "t-garbled", "t-other-tool")))

    assert [(r.name, r.status) for r in records] == [("t-garbled", "failed"), ("t-sound", "loaded")]
    error = records[0].error or ""
    assert "entry_points.txt of t-garbled 1.0 cannot be read" in error
    assert "'name = module:attribute'" in error


# -- one distribution, one record ---------------------------------------------------------


def test_a_folder_on_sys_path_twice_through_a_symlink_counts_once(
    site: Path, tmp_path: Path, registry: Registry
) -> None:
    install(site, "t-twice", "t-twice", "t_twice_mod")
    link = tmp_path / "link-to-site"
    link.symlink_to(site, target_is_directory=True)

    with on_sys_path(link):
        assert str(link) in sys.path
        assert str(site) in sys.path
        records = load(registry, Config(enable=("t-twice",)))

    assert [(r.name, r.status) for r in records] == [("t-twice", "loaded")]
    assert [name for name, _ in registry.extensions()] == ["t-twice"]


def test_a_distribution_installed_in_two_folders_counts_once(site: Path, tmp_path: Path) -> None:
    dist_info = install(site, "t-copied", "t-copied", "t_copied_mod")
    other = tmp_path / "editable"
    other.mkdir()
    shutil.copytree(dist_info, other / dist_info.name)
    shutil.copy(site / "t_copied_mod.py", other / "t_copied_mod.py")

    with on_sys_path(other, prepend=False):
        records = find(Config(enable=("t-copied",)))

    assert [(r.name, r.status, r.distribution) for r in records] == [
        ("t-copied", "loaded", "t-copied")
    ]


def test_a_repeated_entry_line_counts_once(site: Path, registry: Registry) -> None:
    make_distribution(
        site,
        "t-repeat",
        entry_points={"t-repeat": "t_repeat_mod:Extension"},
        modules={"t_repeat_mod.py": EXTENSION},
        extra_entry_point_lines="t-repeat = t_repeat_mod:Extension\n",
    )
    text = next(site.glob("t_repeat-*.dist-info")).joinpath("entry_points.txt").read_text()
    assert text.count("t-repeat = t_repeat_mod:Extension") == 2

    records = load(registry, Config(enable=("t-repeat",)))

    assert [(r.name, r.status) for r in records] == [("t-repeat", "loaded")]


# -- conflicts ----------------------------------------------------------------------------


def _install_gamma_pair(tmp_path: Path, first: str) -> tuple[Path, Path]:
    zeta, beta = tmp_path / "zeta-site", tmp_path / "beta-site"
    for folder in (zeta, beta):
        folder.mkdir(exist_ok=True)
    pair = [(zeta, "Zeta-Gamma", "t_zeta_gamma"), (beta, "beta_gamma", "t_beta_gamma")]
    if first == "beta":
        pair.reverse()
    for folder, dist, module in pair:  # "install order": one before the other
        install(folder, dist, "t-gamma", module)
    return zeta, beta


@pytest.mark.parametrize("first", ["zeta", "beta"])
def test_two_distributions_claiming_one_name_the_first_by_distribution_name_wins(
    tmp_path: Path, first: str
) -> None:
    zeta, beta = _install_gamma_pair(tmp_path, first)
    outcomes = []
    for path_order in ((zeta, beta), (beta, zeta)):
        with on_sys_path(path_order[1]), on_sys_path(path_order[0]):
            assert sys.path.index(str(path_order[0])) < sys.path.index(str(path_order[1]))
            records = find(Config(enable=("t-gamma",)))
            outcomes.append([r.to_dict() for r in records])
            winner = records[0].extension

            assert [(r.distribution, r.status) for r in records] == [
                ("beta_gamma", "loaded"),
                ("Zeta-Gamma", "conflict"),
            ]
            assert type(winner).__module__ == "t_beta_gamma"
            assert "t_zeta_gamma" not in sys.modules
            message = records[1].error or ""
            assert "'t-gamma'" in message
            assert "beta_gamma" in message
            assert "Zeta-Gamma" in message
            assert "the one from beta_gamma is used (first by distribution name)" in message
            assert "To keep beta_gamma's, uninstall Zeta-Gamma or set " in message
            assert "DISPATCH_EXT_DISABLE=Zeta-Gamma; to use Zeta-Gamma's instead" in message
            assert "uninstall beta_gamma or set DISPATCH_EXT_DISABLE=beta_gamma" in message
            assert "switches off every extension it installs" in message
    assert outcomes[0] == outcomes[1]


def test_disabling_one_claimant_by_distribution_name_resolves_a_conflict(tmp_path: Path) -> None:
    zeta, beta = _install_gamma_pair(tmp_path, "zeta")
    with on_sys_path(zeta), on_sys_path(beta):
        records = find(Config(enable=("t-gamma",), disable=("BETA-gamma",)))

    assert [(r.distribution, r.status) for r in records] == [
        ("beta_gamma", "disabled"),
        ("Zeta-Gamma", "loaded"),
    ]


def test_a_name_taken_in_the_registry_is_a_conflict(site: Path, registry: Registry) -> None:
    install(site, "t-taken", "t-taken", "t_taken_mod")

    class Manual:
        def on_shutdown(self) -> None:
            pass

    manual = Manual()
    registry.register(manual, name="t-taken")

    records = load(registry, Config(enable=("t-taken",)))

    assert records[0].status == "conflict"
    assert "already taken" in (records[0].error or "")
    assert registry.get("t-taken") is manual


# -- switches -----------------------------------------------------------------------------


def _from_environment(tmp_path: Path, environ: dict[str, str]) -> Config:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    return load_config(empty, environ=environ)


@pytest.mark.parametrize(
    "switch",
    [
        Config(disable=("t-delta",)),
        Config(disable=("T_DELTA",)),
        Config(disable=("t.delta-dist",)),
        Config(enable=("t-epsilon",)),
        {"DISPATCH_EXT_DISABLE": "x, t_delta"},
        {"DISPATCH_EXT_ENABLE": "t-epsilon"},
    ],
    ids=["by-name", "case-and-underscore", "by-distribution", "allowlist", "env-off", "env-on"],
)
def test_a_disabled_extension_is_never_imported(
    site: Path, tmp_path: Path, switch: Config | dict[str, str]
) -> None:
    install(site, "t-delta-dist", "t-delta", "t_delta_mod", EXPLODES_ON_IMPORT)
    install(site, "t-epsilon", "t-epsilon", "t_epsilon_mod")
    config = switch if isinstance(switch, Config) else _from_environment(tmp_path, switch)

    records = by_name(find(config))

    assert "t_delta_mod" not in sys.modules
    assert records["t-delta"] == ExtensionRecord(
        "t-delta", "t_delta_mod:Extension", "t-delta-dist", "1.0", "disabled", None, ()
    )
    assert records["t-epsilon"].status == "loaded"


def test_autoload_off_scans_and_imports_nothing(
    site: Path, tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(site, "t-off", "t-off", "t_off_mod", EXPLODES_ON_IMPORT)
    scans: list[int] = []
    real_scan = scan_module.scan_now
    monkeypatch.setattr(scan_module, "scan_now", lambda: scans.append(1) or real_scan())
    clear_cache()
    config = _from_environment(tmp_path, {"DISPATCH_EXT_AUTOLOAD": "0"})

    assert find(config) == []
    assert load(registry, config) == []
    assert len(registry) == 0
    assert scans == []
    assert "t_off_mod" not in sys.modules


def test_discover_without_arguments_reads_the_file_and_the_environment(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(site, "t-file-a", "t-file-a", "t_file_a_mod")
    install(site, "t-file-b", "t-file-b", "t_file_b_mod")
    (tmp_path / "dispatch.toml").write_text(
        '[dispatch]\nenable = ["t-file-a", "t-file-b"]\n[extensions.t-file-a]\ncolour = "red"\n'
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DISPATCH_EXT_DISABLE", "t-file-b")

    records = mine(dispatch_ext.discover())

    assert [(r.name, r.status) for r in records] == [
        ("t-file-a", "loaded"),
        ("t-file-b", "disabled"),
    ]
    assert records[0].extension.settings == {"colour": "red"}


# -- settings -----------------------------------------------------------------------------

FACTORY = """\
class Built:
    def __init__(self, path, level):
        self.path, self.level = path, level

    def on_shutdown(self):
        pass

def make(path, level=1):
    return Built(path, level)

class Ready:
    def on_shutdown(self):
        pass

READY = Ready()

def on_shutdown():
    pass
"""


def test_settings_are_passed_to_a_class_and_to_a_factory(site: Path) -> None:
    make_distribution(
        site,
        "t-settings",
        entry_points={"t-class": "t_class_mod:Extension", "t-factory": "t_factory_mod:make"},
        modules={"t_class_mod.py": EXTENSION, "t_factory_mod.py": FACTORY},
    )
    config = Config(
        enable=("t-settings",),
        settings={"t-class": {"path": "audit.jsonl", "events": ["a"]}, "t_factory": {"path": "p"}},
    )

    first = by_name(find(config))
    second = by_name(find(config))

    assert first["t-class"].extension.settings == {"path": "audit.jsonl", "events": ["a"]}
    factory_built = first["t-factory"].extension
    assert (factory_built.path, factory_built.level) == ("p", 1)
    assert first["t-factory"].hooks == ("on_shutdown",)
    # each find() builds its own objects, and settings are not shared between them
    assert second["t-class"].extension is not first["t-class"].extension
    first["t-class"].extension.settings["events"].append("b")
    assert second["t-class"].extension.settings["events"] == ["a"]


@pytest.mark.parametrize("value", ["t_ready_mod", "t_ready_mod:READY"], ids=["module", "instance"])
def test_a_ready_object_loads_as_it_is_and_refuses_settings(site: Path, value: str) -> None:
    make_distribution(
        site, "t-ready", entry_points={"t-ready": value}, modules={"t_ready_mod.py": FACTORY}
    )

    plain = find(Config(enable=("t-ready",)))
    with_settings = find(
        Config(enable=("t-ready",), settings={"t-ready": {"x": 1}}, path=site / "dispatch.toml")
    )

    module = sys.modules["t_ready_mod"]
    assert plain[0].status == "loaded"
    assert plain[0].extension is (module.READY if value.endswith("READY") else module)
    assert plain[0].hooks == ("on_shutdown",)
    assert with_settings[0].status == "failed"
    error = with_settings[0].error or ""
    assert "ready object" in error
    assert "[extensions.t-ready]" in error
    assert str(site / "dispatch.toml") in error


def test_settings_the_class_does_not_take_fail_with_a_pointer_to_the_file(site: Path) -> None:
    make_distribution(
        site, "t-kw", entry_points={"t-kw": "t_kw_mod:make"}, modules={"t_kw_mod.py": FACTORY}
    )

    records = find(Config(enable=("t-kw",), settings={"t-kw": {"pth": "x"}}))

    assert records[0].status == "failed"
    assert "TypeError" in (records[0].error or "")
    assert "'pth'" in (records[0].error or "")
    assert "check [extensions.t-kw] in dispatch.toml" in (records[0].error or "")


# -- order --------------------------------------------------------------------------------


def test_order_list_first_then_by_entry_point_name(site: Path, registry: Registry) -> None:
    for name in ("t-zulu", "t-mike", "t-alpha", "t-kilo"):  # install order is irrelevant
        install(site, f"{name}-dist", name, name.replace("-", "_") + "_mod")
    names = ("t-zulu", "t-mike", "t-alpha", "t-kilo")

    plain = find(Config(enable=names))
    ordered = load(
        registry, Config(enable=names, order=("t-mike", "T-Kilo-Dist", "t-not-installed"))
    )

    assert [r.name for r in plain] == ["t-alpha", "t-kilo", "t-mike", "t-zulu"]
    assert [r.name for r in ordered] == ["t-mike", "t-kilo", "t-alpha", "t-zulu"]
    assert registry.implementers("on_job_completed") == ["t-mike", "t-kilo", "t-alpha", "t-zulu"]


def test_unknown_names_in_order_and_settings_are_warned_about(
    site: Path, caplog: pytest.LogCaptureFixture
) -> None:
    install(site, "t-warn", "t-warn", "t_warn_mod")

    with caplog.at_level(logging.WARNING, logger="dispatch_ext"):
        find(Config(enable=("t-warn",), order=("t-wran",), settings={"t-warm": {}}))

    messages = [r.getMessage() for r in caplog.records]
    assert any("order names 't-wran'" in m and "did you mean 't-warn'" in m for m in messages)
    assert any("[extensions.t-warm] names 't-warm'" in m for m in messages)


# -- timeouts, records, cache -------------------------------------------------------------

SLOW = """\
import asyncio

class Extension:
    async def on_job_completed(self, job, elapsed):
        await asyncio.sleep(2)
"""


def test_configured_timeouts_reach_the_registry(site: Path) -> None:
    install(site, "t-slow", "t-slow", "t_slow_mod", SLOW)
    registry = Registry(strict=False, timeout=60.0)
    try:
        load(registry, Config(enable=("t-slow",), timeouts={"t_slow": 0.05}))
        registry.emit("on_job_completed", **_completed_job())
        stats = registry.stats()["t-slow"]["on_job_completed"]
    finally:
        registry.close()
    assert (stats.calls, stats.timeouts) == (1, 1)


def test_record_json_form_has_exactly_the_listed_keys(site: Path) -> None:
    install(site, "t-json", "t-json", "t_json_mod")

    record = find(Config(enable=("t-json",)))[0]

    assert record.to_dict() == {
        "name": "t-json",
        "distribution": "t-json",
        "version": "1.0",
        "status": "loaded",
        "hooks": ["on_job_completed"],
        "error": None,
    }
    assert record.value == "t_json_mod:Extension"
    assert "extension" not in repr(record)


def test_the_scan_is_cached_and_the_objects_built_every_time(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    install(site, "t-cache-a", "t-cache-a", "t_cache_a_mod")
    scans: list[int] = []
    real_scan = scan_module.scan_now
    monkeypatch.setattr(scan_module, "scan_now", lambda: scans.append(1) or real_scan())
    clear_cache()
    config = Config(enable=("t-cache-a", "t-cache-b", "t-cache-c"))

    first, second = find(config), find(config)
    assert len(scans) == 1
    assert first == second
    assert first[0].extension is not second[0].extension

    install(site, "t-cache-b", "t-cache-b", "t_cache_b_mod")  # installed later
    assert [r.name for r in find(config)] == ["t-cache-a"]
    assert [r.name for r in find(config, refresh=True)] == ["t-cache-a", "t-cache-b"]
    assert len(scans) == 2

    other = tmp_path / "other"
    other.mkdir()
    install(other, "t-cache-c", "t-cache-c", "t_cache_c_mod")
    sys.path.insert(0, str(other))
    try:  # a changed sys.path is a new scan
        assert [r.name for r in find(config)] == ["t-cache-a", "t-cache-b", "t-cache-c"]
        assert len(scans) == 3
    finally:
        sys.path.remove(str(other))
        sys.modules.pop("t_cache_c_mod", None)
    assert [r.name for r in find(config)] == ["t-cache-a", "t-cache-b"]
    assert len(scans) == 4
    clear_cache()
    find(config)
    assert len(scans) == 5


def test_the_group_and_the_lazy_package_attributes() -> None:
    assert GROUP == "dispatch.extensions"
    assert dispatch_ext.discover is discover
    assert dispatch_ext.ExtensionRecord is ExtensionRecord
    assert load_into is dispatch_ext.discovery.load_into


def test_helper_writes_what_an_installer_writes(tmp_path: Path) -> None:
    dist_info = make_distribution(
        tmp_path,
        "My.Dist_Name",
        "2.0",
        entry_points={"t-x": "pkg.sub:Obj"},
        modules={"pkg/__init__.py": "", "pkg.sub": "Obj = 1\n"},
    )

    assert dist_info == tmp_path / "my_dist_name-2.0.dist-info"
    assert (tmp_path / "pkg" / "sub.py").read_text() == "Obj = 1\n"
    assert (dist_info / "top_level.txt").read_text() == "pkg\n"
    assert f"[{GROUP}]\nt-x = pkg.sub:Obj\n" == (dist_info / "entry_points.txt").read_text()
    record = (dist_info / "RECORD").read_text().splitlines()
    assert "pkg/sub.py,," in record
    assert f"{dist_info.name}/METADATA,," in record
    with on_sys_path(tmp_path):
        assert os.fspath(tmp_path) in sys.path
        records = find(Config(enable=("t-x",)))
        assert (records[0].status, records[0].extension) == ("loaded", 1)
        assert "pkg.sub" in sys.modules
    assert os.fspath(tmp_path) not in sys.path
    assert "pkg.sub" not in sys.modules
    assert "pkg" not in sys.modules
