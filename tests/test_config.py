"""The configuration file and the environment switches."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatch_ext.config import Config, load_config
from dispatch_ext.errors import ConfigError

FULL = """\
[dispatch]
autoload = true
enable = ["audit", "metrics"]
disable = ["webhooks"]
strict = true
order = ["audit", "metrics"]
hook_timeout = 3

[dispatch.timeouts]
webhooks = 2.0

[extensions.audit]
path = "audit.jsonl"
events = ["job.completed"]

[extensions.webhooks]
url = "http://127.0.0.1:9/hook"

[engine]
concurrency = 8
"""


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty current directory and no DISPATCH_* variables."""
    for name in (
        "DISPATCH_CONFIG",
        "DISPATCH_EXT_AUTOLOAD",
        "DISPATCH_EXT_ENABLE",
        "DISPATCH_EXT_DISABLE",
        "DISPATCH_EXT_STRICT",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def write(folder: Path, text: str, name: str = "dispatch.toml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_without_a_file_the_defaults_apply(workdir: Path) -> None:
    config = load_config()

    assert config == Config()
    assert (config.autoload, config.enable, config.disable, config.strict) == (
        True,
        None,
        (),
        False,
    )
    assert (config.order, dict(config.settings), dict(config.timeouts)) == ((), {}, {})
    assert (config.hook_timeout, config.path, dict(config.raw)) == (5.0, None, {})


def test_every_key_of_the_file_is_read(workdir: Path) -> None:
    path = write(workdir, FULL)

    config = load_config(path)

    assert config.path == path
    assert config.enable == ("audit", "metrics")
    assert config.disable == ("webhooks",)
    assert config.strict is True
    assert config.order == ("audit", "metrics")
    assert config.hook_timeout == 3.0
    assert isinstance(config.hook_timeout, float)
    assert dict(config.timeouts) == {"webhooks": 2.0}
    assert config.settings_for("audit") == {"path": "audit.jsonl", "events": ["job.completed"]}
    assert config.settings_for("webhooks") == {"url": "http://127.0.0.1:9/hook"}
    assert config.settings_for("metrics") == {}
    assert config.raw["engine"] == {"concurrency": 8}
    assert config.timeout_for("webhooks") == 2.0
    assert config.timeout_for("audit") is None


def test_the_file_is_chosen_explicit_path_then_environment_then_current_directory(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = write(workdir, '[dispatch]\nenable = ["local"]\n')
    from_env = write(workdir, '[dispatch]\nenable = ["env"]\n', "env.toml")
    explicit = write(workdir, '[dispatch]\nenable = ["explicit"]\n', "explicit.toml")

    assert load_config().enable == ("local",)
    assert load_config().path == local
    monkeypatch.setenv("DISPATCH_CONFIG", str(from_env))
    assert load_config().enable == ("env",)
    assert load_config(explicit).enable == ("explicit",)
    assert load_config(str(explicit)).path == explicit
    assert load_config(environ={"DISPATCH_CONFIG": "env.toml"}).path == from_env


def test_a_named_file_that_is_missing_is_an_error(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ConfigError, match=r"nowhere\.toml does not exist; create it"):
        load_config(workdir / "nowhere.toml")

    monkeypatch.setenv("DISPATCH_CONFIG", "gone.toml")
    with pytest.raises(ConfigError) as caught:
        load_config()
    assert str(caught.value) == (
        f"the environment variable DISPATCH_CONFIG names {workdir / 'gone.toml'}, which does "
        "not exist; create it, or point DISPATCH_CONFIG at an existing TOML file, or unset "
        "it to read ./dispatch.toml when present"
    )

    with pytest.raises(ConfigError, match="is a directory"):
        load_config(workdir)


def test_a_directory_named_by_the_environment_is_blamed_on_the_variable(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(workdir, "", "dispatch.toml")
    monkeypatch.setenv("DISPATCH_CONFIG", str(workdir))

    with pytest.raises(ConfigError) as caught:
        load_config()

    message = str(caught.value)
    assert message.startswith(f"the environment variable DISPATCH_CONFIG names {workdir}, ")
    assert "is a directory, not a file" in message
    such_as = f"(such as {workdir / 'dispatch.toml'})"
    assert f"point DISPATCH_CONFIG at an existing TOML file {such_as}" in message
    assert "--config" not in message


def test_how_a_path_was_given_is_named_in_the_error(workdir: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config("missing.toml", given_as="--config")

    assert str(caught.value) == (
        f"--config names {workdir / 'missing.toml'}, which does not exist; create it, or "
        "pass an existing TOML file to --config"
    )


def test_settings_are_looked_up_with_dash_and_underscore_alike_and_copied() -> None:
    config = Config(settings={"my_ext": {"items": [1]}})

    settings = config.settings_for("My-Ext")
    settings["items"].append(2)

    assert settings == {"items": [1, 2]}
    assert config.settings_for("my-ext") == {"items": [1]}


def test_a_config_built_in_code_is_normalised_and_hashable() -> None:
    config = Config(enable=["a"], disable=["b"], order=["c"], settings={"a": {"x": 1}})

    assert (config.enable, config.disable, config.order) == (("a",), ("b",), ("c",))
    assert hash(config) == hash(Config(enable=("a",), disable=("b",), order=("c",)))
    with pytest.raises(TypeError, match="not the string 'audit'"):
        Config(enable="audit")


# -- errors -------------------------------------------------------------------------------


def test_malformed_toml_names_the_file_and_the_line(workdir: Path) -> None:
    path = write(workdir, "[dispatch]\nenable = [audit\n")

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    message = str(caught.value)
    assert message.startswith(f"{path}: not valid TOML")
    assert "line 2" in message


def test_a_file_that_is_not_utf8_is_an_error(workdir: Path) -> None:
    path = workdir / "dispatch.toml"
    path.write_bytes(b"[dispatch]\nenable = ['\xff']\n")

    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "[dispatch]\nstrcit = true\n",
            "unknown key 'strcit' in [dispatch]; did you mean 'strict'?",
        ),
        ("[dispatch]\nhook_timout = 1\n", "did you mean 'hook_timeout'?"),
        ("[dispatch]\ncolour = 1\n", "The known keys are: autoload, enable"),
        (
            "[extension.audit]\npath = 'x'\n",
            "unknown table [extension]; did you mean 'extensions'?",
        ),
        ("[dispach]\nstrict = true\n", "did you mean 'dispatch'?"),
        ("[dispatch]\nautoload = 'no'\n", "[dispatch] autoload must be true or false, got 'no'"),
        ("[dispatch]\nstrict = 1\n", "[dispatch] strict must be true or false"),
        ("[dispatch]\nenable = 'audit'\n", 'write enable = ["audit"]'),
        ("[dispatch]\norder = [1, 2]\n", "[dispatch] order must be a list of extension names"),
        ("[dispatch]\ndisable = ['']\n", "[dispatch] disable must be a list of extension names"),
        ("[dispatch]\nhook_timeout = -1\n", "[dispatch] hook_timeout must be a positive number"),
        ("[dispatch]\nhook_timeout = true\n", "hook_timeout must be a positive number"),
        (
            "[dispatch.timeouts]\nwebhooks = '2s'\n",
            "[dispatch.timeouts] webhooks must be a positive",
        ),
        ("dispatch = 3\n", "[dispatch] must be a table, got int 3"),
        ("[dispatch]\ntimeouts = 2\n", "[dispatch.timeouts] must be a table"),
        ("extensions = ['audit']\n", "[extensions] must be a table"),
        ("[extensions]\naudit = 5\n", "[extensions.audit] must be a table of keyword arguments"),
        (
            "[extensions.webhooks]\noutbox-path = 'x'\n",
            "[extensions.webhooks] key 'outbox-path' cannot be a keyword argument; "
            "did you mean 'outbox_path'?",
        ),
    ],
)
def test_wrong_keys_and_types_name_the_file_the_key_and_the_fix(
    workdir: Path, text: str, expected: str
) -> None:
    path = write(workdir, text)

    with pytest.raises(ConfigError) as caught:
        load_config(path)

    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert expected in message


def test_other_top_level_tables_are_kept_for_their_readers(workdir: Path) -> None:
    path = write(workdir, "[engine]\nconcurrency = 2\n[webhooks_receiver]\nport = 1\n")

    config = load_config(path)

    assert dict(config.raw) == {"engine": {"concurrency": 2}, "webhooks_receiver": {"port": 1}}


# -- environment --------------------------------------------------------------------------


def test_the_environment_overrides_the_file(workdir: Path) -> None:
    path = write(
        workdir,
        '[dispatch]\nautoload = true\nstrict = false\nenable = ["a"]\ndisable = ["b"]\n'
        'order = ["a"]\n',
    )
    environ = {
        "DISPATCH_EXT_AUTOLOAD": "0",
        "DISPATCH_EXT_STRICT": " true ",
        "DISPATCH_EXT_ENABLE": "x, y,,",
        "DISPATCH_EXT_DISABLE": "z",
    }

    config = load_config(path, environ=environ)

    assert (config.autoload, config.strict) == (False, True)
    assert (config.enable, config.disable) == (("x", "y"), ("z",))
    assert config.order == ("a",)
    assert config.path == path


def test_names_set_by_the_environment_remember_the_variable(workdir: Path) -> None:
    path = write(workdir, '[dispatch]\nenable = ["a"]\ndisable = ["b"]\n')

    from_file = load_config(path, environ={})
    from_env = load_config(path, environ={"DISPATCH_EXT_ENABLE": "x"})

    assert dict(from_file.origins) == {}
    assert dict(from_env.origins) == {"enable": "DISPATCH_EXT_ENABLE"}
    assert (from_env.enable, from_env.disable) == (("x",), ("b",))
    assert from_env == Config(enable=("x",), disable=("b",), path=path, raw=from_env.raw)


def test_empty_environment_values_leave_the_file_alone(workdir: Path) -> None:
    path = write(workdir, '[dispatch]\nstrict = true\nenable = ["a"]\n')
    environ = {"DISPATCH_EXT_STRICT": "", "DISPATCH_EXT_ENABLE": " ", "DISPATCH_CONFIG": ""}

    config = load_config(path, environ=environ)

    assert (config.strict, config.enable) == (True, ("a",))


def test_the_process_environment_is_read_by_default(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DISPATCH_EXT_AUTOLOAD", "off")
    monkeypatch.setenv("DISPATCH_EXT_DISABLE", "webhooks,metrics")

    config = load_config()

    assert config.autoload is False
    assert config.disable == ("webhooks", "metrics")
    assert config.path is None


@pytest.mark.parametrize("variable", ["DISPATCH_EXT_AUTOLOAD", "DISPATCH_EXT_STRICT"])
def test_a_switch_that_is_not_a_switch_value_is_an_error(workdir: Path, variable: str) -> None:
    with pytest.raises(ConfigError, match=f"{variable}='maybe' is not a switch value; set it"):
        load_config(environ={variable: "maybe"})


def test_settings_given_in_code_may_hold_live_objects() -> None:
    """Containers are copied per build; objects such as a provider holding a lock are not."""
    import threading

    class Provider:
        def __init__(self) -> None:
            self.lock = threading.Lock()

    provider = Provider()
    config = Config(settings={"metrics": {"meter_provider": provider, "tags": ["a"]}})
    first, second = config.settings_for("metrics"), config.settings_for("metrics")
    assert first["meter_provider"] is provider
    assert first["tags"] == ["a"]
    assert first["tags"] is not second["tags"]
