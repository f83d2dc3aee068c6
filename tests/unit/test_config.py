from __future__ import annotations

import argparse
import configparser
import dataclasses
import logging
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from devserve import config, values
from devserve.config import Settings
from devserve.errors import ConfigError

# --- parsers ---


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", True),
        ("yes", True),
        ("true", True),
        ("on", True),
        (" TRUE ", True),
        ("Yes", True),
        ("0", False),
        ("no", False),
        ("false", False),
        ("off", False),
        ("OFF", False),
        ("", False),
    ],
)
def test_parse_bool_words(text: str, expected: bool) -> None:
    assert values.parse_bool(text) is expected


@pytest.mark.parametrize("text", ["maybe", "2", "y", "enabled"])
def test_parse_bool_rejects_other_words(text: str) -> None:
    with pytest.raises(ValueError, match=rf"'{text}' is not a yes/no value"):
        values.parse_bool(text)


@pytest.mark.parametrize(("text", "expected"), [("42", 42), (" 7 ", 7), ("-3", -3), ("0", 0)])
def test_parse_int(text: str, expected: int) -> None:
    assert values.parse_int(text) == expected


@pytest.mark.parametrize("text", ["4.5", "abc", "", "1e3"])
def test_parse_int_rejects_non_integers(text: str) -> None:
    with pytest.raises(ValueError, match="is not a whole number"):
        values.parse_int(text)


def test_parse_positive_int() -> None:
    assert values.parse_positive_int("1") == 1
    assert values.parse_positive_int("16") == 16
    for text in ("0", "-2"):
        with pytest.raises(ValueError, match="must be 1 or more"):
            values.parse_positive_int(text)


def test_parse_non_negative_int() -> None:
    assert values.parse_non_negative_int("0") == 0
    assert values.parse_non_negative_int("4") == 4
    with pytest.raises(ValueError, match="must be 0 or more"):
        values.parse_non_negative_int("-1")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2048", 2048),
        ("0", 0),
        ("512M", 512),
        ("512MiB", 512),
        ("2G", 2048),
        ("2gb", 2048),
        ("4096k", 4),
        (" 100 m ", 100),
    ],
)
def test_parse_mebibytes(text: str, expected: int) -> None:
    assert values.parse_mebibytes(text) == expected


@pytest.mark.parametrize("text", ["", "-1", "2T", "lots", "1.5G"])
def test_parse_mebibytes_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="is not a memory size"):
        values.parse_mebibytes(text)


@pytest.mark.parametrize(
    ("text", "expected"), [("0", 0), ("1", 1), ("8069", 8069), ("65535", 65535), (" 80 ", 80)]
)
def test_parse_port(text: str, expected: int) -> None:
    assert values.parse_port(text) == expected


@pytest.mark.parametrize("text", ["65536", "-1", "100000", "http", "", "80.5"])
def test_parse_port_rejects_out_of_range_and_garbage(text: str) -> None:
    with pytest.raises(ValueError, match=r"is not a port number \(0-65535; 0 picks a free port\)"):
        values.parse_port(text)


@pytest.mark.parametrize(("text", "expected"), [("5", 5.0), ("0", 0.0), ("2.5", 2.5), (" 1 ", 1.0)])
def test_parse_seconds(text: str, expected: float) -> None:
    assert values.parse_seconds(text) == expected


def test_parse_seconds_rejects_negative_and_garbage() -> None:
    with pytest.raises(ValueError, match="must not be negative"):
        values.parse_seconds("-0.5")
    with pytest.raises(ValueError, match="is not a number of seconds"):
        values.parse_seconds("soon")


@pytest.mark.parametrize(
    ("text", "expected"), [("-1", -1.0), ("-1.0", -1.0), ("0", 0.0), ("9", 9.0)]
)
def test_parse_seconds_or_inherit(text: str, expected: float) -> None:
    assert values.parse_seconds_or_inherit(text) == expected


@pytest.mark.parametrize("text", ["-2", "-0.5"])
def test_parse_seconds_or_inherit_rejects_other_negatives(text: str) -> None:
    with pytest.raises(ValueError, match=r"must be -1 \(the fallback\), 0 \(no limit\) or more"):
        values.parse_seconds_or_inherit(text)
    with pytest.raises(ValueError, match="is not a number of seconds"):
        values.parse_seconds_or_inherit("soon")


def test_minus_one_is_a_value_on_the_command_line() -> None:
    given = cli("--limit-time-real-cron", "-1", "--max-cron-threads", "0")
    assert given == {"limit_time_real_cron": -1.0, "max_cron_threads": 0}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", ()),
        ("reload", ("reload",)),
        ("pdb,reload", ("pdb", "reload")),
        (" werkzeug , reload ", ("werkzeug", "reload")),
        ("reload,reload", ("reload",)),
        ("all", ("reload", "werkzeug")),
        ("all,pdb", ("reload", "werkzeug", "pdb")),
        ("reload,all", ("reload", "werkzeug")),
    ],
)
def test_parse_dev(text: str, expected: tuple[str, ...]) -> None:
    assert values.parse_dev(text) == expected


def test_all_does_not_include_modes_that_need_a_terminal() -> None:
    assert "pdb" not in values.parse_dev("all")


@pytest.mark.parametrize("text", ["bogus", "reload,bogus", "RELOAD"])
def test_parse_dev_rejects_unknown_value_listing_the_valid_ones(text: str) -> None:
    with pytest.raises(ValueError) as caught:
        values.parse_dev(text)
    message = str(caught.value)
    assert "unknown --dev option" in message
    assert "valid: reload, werkzeug, pdb, ipdb, pudb, all" in message
    bad = text.split(",")[-1]
    assert repr(bad) in message


@pytest.mark.parametrize(
    ("text", "expected"), [("debug", "debug"), ("WARNING", "warning"), (" Error ", "error")]
)
def test_parse_log_level(text: str, expected: str) -> None:
    assert values.parse_log_level(text) == expected


def test_parse_log_level_rejects_unknown_listing_levels() -> None:
    with pytest.raises(ValueError, match=r"'verbose' is not a log level \(debug, info, warning"):
        values.parse_log_level("verbose")


def test_parse_addons_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert values.parse_addons_path(" one ,~/two,") == (
        str(tmp_path / "one"),
        str(tmp_path / "two"),
    )


def test_parse_addons_path_names_the_missing_folder(tmp_path: Path) -> None:
    (tmp_path / "file.txt").write_text("not a folder")
    with pytest.raises(ValueError, match=r"addons path '.*missing' does not exist"):
        values.parse_addons_path(f"{tmp_path},{tmp_path / 'missing'}")
    with pytest.raises(ValueError, match=r"file\.txt' does not exist or is not a directory"):
        values.parse_addons_path(str(tmp_path / "file.txt"))


@pytest.mark.parametrize(
    ("value", "text"),
    [(True, "true"), (False, "false"), (("a", "b"), "a,b"), ((), ""), (8069, "8069"), (2.5, "2.5")],
)
def test_format_value(value: Any, text: str) -> None:
    assert values.format_value(value) == text


# --- resolve: default < file < env < command line ---


def cli(*args: str) -> dict[str, Any]:
    """What the command line contributes, parsed by the parser add_arguments builds."""
    parser = argparse.ArgumentParser()
    config.add_arguments(parser)
    return vars(parser.parse_args(list(args)))


def write_rc(path: Path, **values: str) -> Path:
    lines = ["[options]", *(f"{key} = {value}" for key, value in values.items())]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("in_file", "in_env", "on_cli", "expected"),
    [
        (None, None, None, 8069),
        ("1111", None, None, 1111),
        (None, "2222", None, 2222),
        ("1111", "2222", None, 2222),
        ("1111", None, "3333", 3333),
        (None, "2222", "3333", 3333),
        ("1111", "2222", "3333", 3333),
        ("1111", "2222", "0", 0),
    ],
)
def test_http_port_precedence(
    tmp_path: Path,
    in_file: str | None,
    in_env: str | None,
    on_cli: str | None,
    expected: int,
) -> None:
    environ = {"HOME": str(tmp_path)}
    if in_file is not None:
        write_rc(tmp_path / ".devserverc", http_port=in_file)
    if in_env is not None:
        environ["DEVSERVE_HTTP_PORT"] = in_env
    args = ["--http-port", on_cli] if on_cli is not None else []
    assert config.resolve(cli(*args), environ).http_port == expected


def test_each_layer_shows_through_where_higher_ones_are_silent(tmp_path: Path) -> None:
    write_rc(
        tmp_path / ".devserverc",
        http_interface="0.0.0.0",
        log_level="debug",
        shutdown_grace="7",
        max_http_threads="4",
    )
    environ = {
        "HOME": str(tmp_path),
        "DEVSERVE_LOG_LEVEL": "warning",
        "DEVSERVE_SHUTDOWN_GRACE": "9",
        "DEVSERVE_DEV": "all",
    }
    settings = config.resolve(cli("--shutdown-grace", "1.5"), environ)
    assert settings.http_port == 8069  # default
    assert settings.http_interface == "0.0.0.0"  # file
    assert settings.max_http_threads == 4  # file
    assert settings.log_level == "warning"  # env over file
    assert settings.dev == ("reload", "werkzeug")  # env
    assert settings.reload is True
    assert settings.shutdown_grace == 1.5  # command line over env and file
    assert settings.config == str(tmp_path / ".devserverc")


def test_switches_come_from_env_unless_given_on_the_command_line(tmp_path: Path) -> None:
    home = {"HOME": str(tmp_path)}
    assert config.resolve(cli(), home).stop_after_init is False
    assert config.resolve(cli(), {**home, "DEVSERVE_STOP_AFTER_INIT": "yes"}).stop_after_init
    off = {**home, "DEVSERVE_STOP_AFTER_INIT": "off"}
    assert config.resolve(cli(), off).stop_after_init is False
    assert config.resolve(cli("--stop-after-init"), off).stop_after_init is True


def test_without_devserverc_nothing_is_read(tmp_path: Path) -> None:
    settings = config.resolve({}, {"HOME": str(tmp_path)})
    assert settings == Settings()
    assert settings.config is None


def test_devserverc_is_used_when_present(tmp_path: Path) -> None:
    rc = write_rc(tmp_path / ".devserverc", log_level="error")
    settings = config.resolve({}, {"HOME": str(tmp_path)})
    assert settings.log_level == "error"
    assert settings.config == str(rc)


def test_explicit_config_replaces_devserverc(tmp_path: Path) -> None:
    write_rc(tmp_path / ".devserverc", log_level="error", http_port="1111")
    other = write_rc(tmp_path / "other.ini", http_port="2222")
    for command_line, environ in [
        (cli("-c", str(other)), {"HOME": str(tmp_path)}),
        ({}, {"HOME": str(tmp_path), "DEVSERVE_CONFIG": str(other)}),
    ]:
        settings = config.resolve(command_line, environ)
        assert settings.http_port == 2222
        assert settings.log_level == "info"  # ~/.devserverc was not read
        assert settings.config == str(other)


@pytest.mark.parametrize("where", ["cli", "env"])
def test_explicit_missing_config_file_is_an_error(tmp_path: Path, where: str) -> None:
    missing = tmp_path / "nope.ini"
    environ = {"HOME": str(tmp_path)}
    command_line: dict[str, Any] = {}
    if where == "cli":
        command_line = cli("--config", str(missing))
    else:
        environ["DEVSERVE_CONFIG"] = str(missing)
    with pytest.raises(ConfigError, match=r"cannot read config file .*nope\.ini.*-c/--config"):
        config.resolve(command_line, environ)


def test_explicit_missing_config_file_is_fine_with_save(tmp_path: Path) -> None:
    missing = tmp_path / "new.ini"
    settings = config.resolve(cli("-c", str(missing), "--save"), {"HOME": str(tmp_path)})
    assert settings.save is True
    assert settings.config == str(missing)
    assert not missing.exists()  # resolve only reads


def test_save_without_config_targets_devserverc(tmp_path: Path) -> None:
    settings = config.resolve(cli("--save"), {"HOME": str(tmp_path)})
    assert settings.config == str(tmp_path / ".devserverc")


@pytest.mark.parametrize(
    "content",
    [
        "http_port = 80\n",  # no section header
        "[options]\nhttp_port = 80\nhttp_port = 81\n",  # duplicate key
        "[options]\n[options]\n",  # duplicate section
    ],
)
def test_invalid_ini_is_a_config_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad.ini"
    path.write_text(content)
    with pytest.raises(ConfigError, match=r"bad\.ini is not a valid INI file"):
        config.read_config_file(str(path))


def test_config_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "latin1.ini"
    path.write_bytes(b"[options]\nhttp_interface = caf\xe9\n")
    with pytest.raises(ConfigError, match=r"latin1\.ini is not a valid INI file"):
        config.read_config_file(str(path))


def test_config_file_that_is_a_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        config.resolve(cli("-c", str(tmp_path)), {"HOME": str(tmp_path)})


def test_file_without_options_section_sets_nothing(tmp_path: Path) -> None:
    path = tmp_path / "other.ini"
    path.write_text("[server]\nhttp_port = 1\n")
    assert config.read_config_file(str(path)) == {}


def test_invalid_value_in_file_names_key_and_file(tmp_path: Path) -> None:
    path = write_rc(tmp_path / "rc.ini", http_port="seventy")
    with pytest.raises(ConfigError, match=r"invalid value for http_port in config file .*rc\.ini"):
        config.read_config_file(str(path))


def test_invalid_value_in_env_names_the_variable(tmp_path: Path) -> None:
    environ = {"HOME": str(tmp_path), "DEVSERVE_DEV": "turbo"}
    with pytest.raises(ConfigError) as caught:
        config.resolve({}, environ)
    message = str(caught.value)
    assert "environment variable DEVSERVE_DEV" in message
    assert "valid: reload, werkzeug, pdb, ipdb, pudb, all" in message


def test_unknown_key_is_warned_about_and_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = write_rc(tmp_path / "rc.ini", colour="blue", http_port="1234")
    with caplog.at_level(logging.WARNING, logger="devserve.config"):
        values = config.read_config_file(str(path))
    assert values == {"http_port": 1234}
    warnings = [r for r in caplog.records if r.name == "devserve.config"]
    assert len(warnings) == 1
    assert warnings[0].levelno == logging.WARNING
    assert "unknown setting 'colour'" in warnings[0].getMessage()
    assert str(path) in warnings[0].getMessage()


@pytest.mark.parametrize("key", ["save", "config"])
def test_command_line_only_settings_are_not_read_from_file(
    tmp_path: Path, key: str, caplog: pytest.LogCaptureFixture
) -> None:
    write_rc(tmp_path / ".devserverc", **{key: "true"})
    with caplog.at_level(logging.WARNING, logger="devserve.config"):
        settings = config.resolve({}, {"HOME": str(tmp_path)})
    assert settings.save is False
    assert settings.config == str(tmp_path / ".devserverc")
    assert f"unknown setting {key!r}" in caplog.text


def test_none_literal_means_not_set(tmp_path: Path) -> None:
    path = write_rc(tmp_path / "rc.ini", pidfile="None", http_port=" None ", log_level="debug")
    assert config.read_config_file(str(path)) == {"log_level": "debug"}
    write_rc(tmp_path / ".devserverc", pidfile="None", http_port="None")
    settings = config.resolve({}, {"HOME": str(tmp_path)})
    assert settings.pidfile is None
    assert settings.http_port == 8069


def test_missing_addons_path_in_file_or_env_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-addons"
    write_rc(tmp_path / ".devserverc", addons_path=str(missing))
    with pytest.raises(ConfigError) as caught:
        config.resolve({}, {"HOME": str(tmp_path)})
    assert str(missing) in str(caught.value)
    assert "addons_path" in str(caught.value)

    (tmp_path / ".devserverc").unlink()
    with pytest.raises(ConfigError, match="DEVSERVE_ADDONS_PATH") as caught:
        config.resolve({}, {"HOME": str(tmp_path), "DEVSERVE_ADDONS_PATH": str(missing)})
    assert str(missing) in str(caught.value)


# --- --save ---

# Besides the one-off switches: the debugger PIN is a secret, and allowing the debugger on a
# network interface must never become sticky by accident.
NEVER_SAVED = {
    "dev",
    "config",
    "save",
    "stop_after_init",
    "debugger_pin",
    "debugger_allow_remote",
}


@pytest.fixture
def full_settings(tmp_path: Path) -> Settings:
    addons_dir = tmp_path / "addons"
    addons_dir.mkdir()
    return Settings(
        config=str(tmp_path / "rc.ini"),
        save=True,
        addons_path=(str(addons_dir),),
        app="pkg.wsgi:create_app('x', 2)",
        http_interface="::",
        http_port=9000,
        dev=("reload", "pdb"),
        max_http_threads=8,
        gevent_port=8072,
        shutdown_grace=2.5,
        pidfile=str(tmp_path / "devserve.pid"),
        log_level="debug",
        logfile=str(tmp_path / "devserve.log"),
        stop_after_init=True,
    )


def saved_keys(path: Path) -> list[str]:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path, encoding="utf-8")
    return list(parser["options"])


def test_save_writes_sorted_keys_and_never_command_line_only_ones(
    tmp_path: Path, full_settings: Settings
) -> None:
    path = tmp_path / "rc.ini"
    config.save_config_file(full_settings, str(path))
    keys = saved_keys(path)
    assert keys == sorted(keys)
    assert not NEVER_SAVED & set(keys)
    expected = {f.name for f, _ in config.options()} - NEVER_SAVED
    assert set(keys) == expected


def test_save_skips_settings_without_value(tmp_path: Path) -> None:
    path = tmp_path / "rc.ini"
    config.save_config_file(Settings(http_port=1234), str(path))
    keys = saved_keys(path)
    for unset in ("app", "max_http_threads", "gevent_port", "pidfile", "logfile"):
        assert unset not in keys
    assert "http_port = 1234" in path.read_text()


def test_saved_file_is_private(tmp_path: Path) -> None:
    path = tmp_path / "rc.ini"
    config.save_config_file(Settings(), str(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600


def test_saving_over_a_readable_file_makes_it_private_and_replaces_it(tmp_path: Path) -> None:
    path = tmp_path / "rc.ini"
    path.write_text("[options]\nlog_level = critical\nold_key = " + "x" * 500 + "\n")
    os.chmod(path, 0o644)
    config.save_config_file(Settings(log_level="error"), str(path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    text = path.read_text()
    assert "log_level = error" in text
    assert "critical" not in text
    assert "old_key" not in text


def test_save_then_read_round_trips(tmp_path: Path, full_settings: Settings) -> None:
    path = tmp_path / "rc.ini"
    config.save_config_file(full_settings, str(path))
    read_back = Settings(**config.read_config_file(str(path)))
    assert read_back == dataclasses.replace(
        full_settings, config=None, save=False, dev=(), stop_after_init=False
    )


def test_save_round_trips_defaults(tmp_path: Path) -> None:
    path = tmp_path / "rc.ini"
    config.save_config_file(Settings(), str(path))
    assert Settings(**config.read_config_file(str(path))) == Settings()


def test_save_into_missing_folder_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "rc.ini"
    with pytest.raises(ConfigError, match=r"cannot write config file .*rc\.ini"):
        config.save_config_file(Settings(), str(path))


# --- positional targets ---


def test_merge_target_directory_joins_addons_path(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    values = {"addons_path": (str(first),), "http_port": 1}
    merged = config.merge_target(values, [str(second)])
    assert merged == {"addons_path": (str(first), str(second)), "http_port": 1}
    assert values == {"addons_path": (str(first),), "http_port": 1}  # input untouched


def test_merge_target_relative_directory_becomes_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "addons").mkdir()
    monkeypatch.chdir(tmp_path)
    assert config.merge_target({}, ["addons"]) == {"addons_path": (str(tmp_path / "addons"),)}


def test_merge_target_module_attribute_becomes_app() -> None:
    assert config.merge_target({}, ["pkg.wsgi:app"]) == {"app": "pkg.wsgi:app"}


def test_merge_target_directory_with_colon_is_an_addons_folder(tmp_path: Path) -> None:
    folder = tmp_path / "odd:name"
    folder.mkdir()
    assert config.merge_target({}, [str(folder)]) == {"addons_path": (str(folder),)}


@pytest.mark.parametrize(
    ("values", "targets"),
    [({}, ["one:app", "two:app"]), ({"app": "one:app"}, ["two:app"])],
)
def test_merge_target_two_apps_is_an_error(values: dict[str, Any], targets: list[str]) -> None:
    with pytest.raises(ConfigError, match=r"two apps given \('one:app' and 'two:app'\)"):
        config.merge_target(values, targets)


def test_merge_target_missing_directory_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(ConfigError, match="nowhere' does not exist") as caught:
        config.merge_target({}, [str(missing)])
    assert "module:attribute" in str(caught.value)


# --- the generated parser and reference ---


def test_help_mentions_every_flag_and_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    parser = argparse.ArgumentParser(prog="devserve")
    config.add_arguments(parser)
    text = parser.format_help()
    for field, option in config.options():
        for flag in option.flags:
            assert flag in text, flag
        if option.in_file or field.name == "config":
            assert f"DEVSERVE_{field.name.upper()}" in text, field.name
    assert "DEVSERVE_SAVE" not in text  # --save is command line only


def test_parser_leaves_options_not_given_absent() -> None:
    assert cli() == {}
    assert cli("--dev", "all", "-p", "0", "--save") == {
        "dev": ("reload", "werkzeug"),
        "http_port": 0,
        "save": True,
    }


def test_parser_rejects_bad_values_with_the_parser_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        cli("--http-port", "99999")
    assert "'99999' is not a port number" in capsys.readouterr().err


def test_reference_table_has_a_row_per_setting() -> None:
    lines = config.reference_table().splitlines()
    assert lines[0] == "| option | env / config key | default | description |"
    assert lines[1] == "|---|---|---|---|"
    rows = lines[2:]
    declared = config.options()
    assert len(rows) == len(declared)
    for row, (field, option) in zip(rows, declared, strict=True):
        flags = ", ".join(f"`{flag}`" for flag in option.flags)
        assert row.startswith(f"| {flags}"), row
        assert row.endswith(f" | {option.help} |"), row
        env = f"`DEVSERVE_{field.name.upper()}`"
        if option.in_file:
            assert f"| {env} / `{field.name}` |" in row
        elif field.name == "config":
            assert f"| {env} |" in row
        else:
            assert "| command line only |" in row
            assert env not in row


def test_reference_table_rows_show_metavars_and_defaults() -> None:
    rows = {row.split(" | ")[0]: row for row in config.reference_table().splitlines()[2:]}
    assert "| `8069` |" in rows["| `-p`, `--http-port` `PORT`"]
    assert "| `5.0` |" in rows["| `--shutdown-grace` `SECONDS`"]
    assert "| `false` |" in rows["| `--stop-after-init`"]
    assert "| `DEVSERVE_APP` / `app` |  |" in rows["| `--app` `MODULE:ATTR`"]  # None: no default
    assert " / `addons_path` |  |" in rows["| `--addons-path` `DIRS`"]  # (): no default


class TestFromKeywords:
    def test_strings_and_lists_are_parsed_like_the_command_line(self) -> None:
        from devserve.config import from_keywords

        values = from_keywords(
            {"dev": "all", "http_port": "0", "reload_include": ["*.py", "*.html"]}
        )
        assert values == {
            "dev": ("reload", "werkzeug"),
            "http_port": 0,
            "reload_include": ("*.py", "*.html"),
        }

    def test_other_values_are_taken_as_they_are(self) -> None:
        from devserve.config import from_keywords

        assert from_keywords({"http_port": 8080, "shutdown_grace": 1.5}) == {
            "http_port": 8080,
            "shutdown_grace": 1.5,
        }

    def test_unknown_name_lists_the_known_ones(self) -> None:
        from devserve.config import from_keywords
        from devserve.errors import ConfigError

        with pytest.raises(ConfigError, match=r"unknown setting 'htp_port'.*http_port"):
            from_keywords({"htp_port": 1})

    def test_bad_value_names_the_setting(self) -> None:
        from devserve.config import from_keywords
        from devserve.errors import ConfigError

        with pytest.raises(ConfigError, match=r"http_port in devserve.run\(\).*not a port"):
            from_keywords({"http_port": "eighty"})
