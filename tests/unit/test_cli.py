"""The command line, through ``main(argv)``. No test here starts a server: every run with
something to serve passes ``--stop-after-init``."""

from __future__ import annotations

import re
import stat
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from devserve import cli
from devserve.errors import ConfigError, ExitCode
from tests.unit.conftest import WriteAddon, one_error_line

EXAMPLE_ADDONS = str(Path(__file__).resolve().parents[2] / "examples" / "addons")


@pytest.fixture(autouse=True)
def home(isolated_cli: Path) -> Path:
    return isolated_cli


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch) -> dict[str, type[cli.Command]]:
    """A copy of the registry for the test to add to; the real one is put back after."""
    monkeypatch.setattr(cli, "COMMANDS", dict(cli.COMMANDS))
    return cli.COMMANDS


# --- help ---


@pytest.mark.parametrize("argv", [["help"], ["-h"], ["--help"]])
def test_help_lists_commands_with_summaries(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assert cli.main(argv) == ExitCode.OK
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert lines[0] == "usage: devserve [COMMAND] [OPTIONS] [TARGET]"
    assert re.search(r"^  help\s+List the commands\.$", out, re.MULTILINE)
    assert re.search(
        r"^  server\s+Serve an addons folder or a WSGI app \(the default command\)\.$",
        out,
        re.MULTILINE,
    )
    assert "With no command, 'server' runs." in out


def test_help_lists_commands_sorted_and_aligned(capsys: pytest.CaptureFixture[str]) -> None:
    cli.main(["help"])
    out = capsys.readouterr().out
    block = out.split("Commands:\n")[1].split("\n\n")[0].splitlines()
    names = [line.split()[0] for line in block]
    assert names == sorted(cli.COMMANDS)
    columns = {
        line.index(cli.COMMANDS[name].summary()) for line, name in zip(block, names, strict=True)
    }
    assert len(columns) == 1  # summaries start in one column


# --- bad input: exit 2, one line ---


def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["frobnicate"]) == ExitCode.USAGE
    line = one_error_line(capsys)
    assert "unknown command 'frobnicate'" in line
    known = "gevent, help, reload, scaffold, server, status, stop"
    assert f"(known commands: {known}; give --addons-path DIRS" in line


@pytest.mark.parametrize(
    "argv", [["--frobnicate"], ["server", "--frobnicate"], [EXAMPLE_ADDONS, "--frobnicate"]]
)
def test_unknown_option(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert cli.main(argv) == ExitCode.USAGE
    line = one_error_line(capsys)
    assert "unrecognized arguments: --frobnicate" in line
    assert "run 'devserve server --help'" in line


@pytest.mark.parametrize(
    ("argv", "fragments"),
    [
        (["server", "--http-port", "abc"], ["--http-port", "'abc' is not a port number"]),
        (["-p", "70000"], ["--http-port", "'70000' is not a port number"]),
        (
            ["--dev", "relaod"],
            ["--dev", "'relaod'", "valid: reload, werkzeug, pdb, ipdb, pudb, all"],
        ),
        (["--max-http-threads", "0"], ["--max-http-threads", "must be 1 or more"]),
        (["--log-level", "loud"], ["--log-level", "'loud' is not a log level"]),
        (["--shutdown-grace", "-1"], ["--shutdown-grace", "must not be negative"]),
        (["--addons-path", "missing-dir"], ["--addons-path", "'missing-dir' does not exist"]),
        (["--http-port"], ["--http-port", "expected one argument"]),
    ],
)
def test_bad_value_on_the_command_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], fragments: list[str]
) -> None:
    assert cli.main(argv) == ExitCode.USAGE
    line = one_error_line(capsys)
    for fragment in fragments:
        assert fragment in line


# --- config errors: exit 3 ---


def test_missing_addons_folder_as_target(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["./no-such-addons", "--stop-after-init"]) == ExitCode.CONFIG
    assert "'./no-such-addons' does not exist" in one_error_line(capsys)


def test_missing_addons_folder_in_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("DEVSERVE_ADDONS_PATH", str(tmp_path / "gone"))
    assert cli.main(["--stop-after-init"]) == ExitCode.CONFIG
    line = one_error_line(capsys)
    assert "DEVSERVE_ADDONS_PATH" in line
    assert str(tmp_path / "gone") in line


def test_missing_addons_folder_in_devserverc(
    capsys: pytest.CaptureFixture[str], home: Path, tmp_path: Path
) -> None:
    (home / ".devserverc").write_text(f"[options]\naddons_path = {tmp_path / 'gone'}\n")
    assert cli.main(["--stop-after-init"]) == ExitCode.CONFIG
    line = one_error_line(capsys)
    assert str(home / ".devserverc") in line
    assert str(tmp_path / "gone") in line


def test_folder_without_addons(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert cli.main(["./empty", "--stop-after-init"]) == ExitCode.CONFIG
    assert "no addon found" in one_error_line(capsys)


def test_nothing_to_serve(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main([]) == ExitCode.CONFIG
    assert "nothing to serve" in one_error_line(capsys)


def test_missing_config_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["-c", "nope.ini", EXAMPLE_ADDONS]) == ExitCode.CONFIG
    assert "cannot read config file" in one_error_line(capsys)


# --- loading without serving ---


@pytest.mark.parametrize(
    "argv",
    [
        [EXAMPLE_ADDONS, "--stop-after-init"],
        ["server", "--stop-after-init", EXAMPLE_ADDONS],
        ["--addons-path", EXAMPLE_ADDONS, "--stop-after-init"],
    ],
)
def test_stop_after_init_with_example_addons(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    assert cli.main(argv) == ExitCode.OK
    err = capsys.readouterr().err
    assert f"loaded addons in {EXAMPLE_ADDONS}; stopping after init" in err
    assert "devserve: error" not in err
    assert "devserve_addons.hello" in sys.modules


def test_stop_after_init_from_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEVSERVE_STOP_AFTER_INIT", "1")
    assert cli.main([EXAMPLE_ADDONS]) == ExitCode.OK
    assert "stopping after init" in capsys.readouterr().err


def test_relative_folder_name_is_a_target(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    write_addon: WriteAddon,
    unique: Callable[[str], str],
) -> None:
    write_addon(tmp_path / "addons", unique("site"))
    assert cli.main(["addons", "--stop-after-init"]) == ExitCode.OK
    assert f"loaded addons in {tmp_path / 'addons'}" in capsys.readouterr().err


def test_app_target(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, unique: Callable[[str], str]
) -> None:
    module = unique("devserve_test_cli_app")
    (tmp_path / f"{module}.py").write_text("def app(environ, start_response):\n    return []\n")
    try:
        assert cli.main([f"{module}:app", "--stop-after-init"]) == ExitCode.OK
    finally:
        sys.modules.pop(module, None)
    assert f"loaded {module}:app; stopping after init" in capsys.readouterr().err


def test_addon_that_fails_to_import(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    write_addon: WriteAddon,
    unique: Callable[[str], str],
) -> None:
    name = unique("broken")
    write_addon(tmp_path / "addons", name, code="\n\n1 / 0\n")
    assert cli.main(["./addons", "--stop-after-init"]) == ExitCode.APP_LOAD
    _, err = capsys.readouterr()
    [line] = [line for line in err.splitlines() if line.startswith("devserve: error: ")]
    assert f"addon {name!r} failed to import: ZeroDivisionError" in line
    assert f"{tmp_path / 'addons' / name / '__init__.py'}, line 3" in line
    assert "Traceback" not in err


def test_save_writes_devserverc_and_next_run_uses_it(
    capsys: pytest.CaptureFixture[str], home: Path
) -> None:
    argv = [EXAMPLE_ADDONS, "-p", "9123", "--dev", "all", "--save", "--stop-after-init"]
    assert cli.main(argv) == ExitCode.OK
    rc = home / ".devserverc"
    assert stat.S_IMODE(rc.stat().st_mode) == 0o600
    text = rc.read_text()
    assert f"addons_path = {EXAMPLE_ADDONS}\n" in text
    assert "http_port = 9123\n" in text
    for never in ("dev", "stop_after_init", "save", "config"):
        assert f"\n{never} =" not in text
    assert f"settings saved to {rc}" in capsys.readouterr().err

    # The saved addons path is all the next run needs.
    assert cli.main(["--stop-after-init"]) == ExitCode.OK
    assert f"loaded addons in {EXAMPLE_ADDONS}" in capsys.readouterr().err


# --- the command registry ---


def test_new_command_registers_itself(
    commands: dict[str, type[cli.Command]], capsys: pytest.CaptureFixture[str]
) -> None:
    calls: list[list[str]] = []

    class Greet(cli.Command):
        """Say hello.

        More text that help does not show.
        """

        def run(self, args: list[str]) -> int:
            calls.append(args)
            return 7

    assert commands["greet"] is Greet
    assert Greet.name == "greet"
    assert Greet.summary() == "Say hello."
    assert cli.main(["greet", "-x", "world"]) == 7
    assert calls == [["-x", "world"]]

    cli.main(["help"])
    out = capsys.readouterr().out
    assert re.search(r"^  greet\s+Say hello\.$", out, re.MULTILINE)
    assert "More text" not in out


def test_command_with_explicit_name(commands: dict[str, type[cli.Command]]) -> None:
    class Whatever(cli.Command):
        name = "do_it2"

    assert commands["do_it2"] is Whatever
    assert "whatever" not in commands
    assert Whatever.summary() == ""


@pytest.mark.parametrize("bad", ["Bad", "bad-name", "9lives", "_private", "with space"])
def test_invalid_command_names_are_rejected(
    commands: dict[str, type[cli.Command]], bad: str
) -> None:
    before = dict(commands)
    with pytest.raises(ValueError, match=r"command name .* must match \[a-z\]\[a-z0-9_\]\*"):
        type("Cmd", (cli.Command,), {"name": bad})
    assert commands == before


def test_invalid_class_name_is_rejected(commands: dict[str, type[cli.Command]]) -> None:
    with pytest.raises(ValueError, match="'_hidden'"):

        class _Hidden(cli.Command):
            pass

    assert "_hidden" not in commands


def test_devserve_errors_become_their_exit_code_and_one_line(
    commands: dict[str, type[cli.Command]], capsys: pytest.CaptureFixture[str]
) -> None:
    class Failing(cli.Command):
        def run(self, args: list[str]) -> int:
            raise ConfigError("the thing is wrong; fix the thing")

    assert cli.main(["failing"]) == ExitCode.CONFIG
    assert one_error_line(capsys) == "devserve: error: the thing is wrong; fix the thing"


def test_interrupt_during_start_up_is_a_normal_stop(
    commands: dict[str, type[cli.Command]],
) -> None:
    """INT, or TERM (turned into KeyboardInterrupt until the server's handlers take over),
    before serving: one signal is a normal stop, as once serving."""

    class Interrupted(cli.Command):
        def run(self, args: list[str]) -> int:
            raise KeyboardInterrupt

    assert cli.main(["interrupted"]) == ExitCode.OK


def test_main_reads_sys_argv_by_default(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(sys, "argv", ["devserve", "help"])
    assert cli.main() == ExitCode.OK
    assert "Commands:" in capsys.readouterr().out


def test_a_reloaded_image_finds_its_command_past_a_gone_addons_folder(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``devserve addons gevent``, the folder gone before a reload: the next image still
    runs ``gevent``, and takes ``addons`` for a folder, not a command."""
    from devserve import values

    monkeypatch.chdir(tmp_path)
    assert cli._command_position(["addons", "gevent"]) == 0  # a first start: a name
    monkeypatch.setattr(values, "FOLDERS_MAY_BE_GONE", True)
    assert cli._command_position(["addons", "gevent"]) == 1
    assert cli._command_position(["addons"]) is None  # the default command
    assert cli._command_position(["--addons-path", "addons", "gevent", "-p", "0"]) == 2
