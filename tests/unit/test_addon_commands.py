"""Addon commands: ``<addon>/cli/<name>.py`` found without running addon code, listed by
``devserve help``, run by ``devserve <name>`` (``cli.main()`` in this process)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from devserve import addon_commands, cli
from devserve.errors import AppLoadError, ConfigError, ExitCode
from tests.unit.conftest import WriteAddon, one_error_line

pytestmark = pytest.mark.usefixtures("isolated_cli")

GREET = '''\
import pathlib
from devserve.cli import Command

# Executing this file leaves a trace, so tests can tell whether it ran.
(pathlib.Path(__file__).parent / "ran").write_text("yes")


class Greet(Command):
    """Say hello to each name.

    Details help does not show.
    """

    def run(self, args):
        print("hello", *args)
        return 7
'''

# An addon whose package must never be imported for its commands.
EXPLODING_INIT = "raise RuntimeError('the addon package was imported')\n"


@pytest.fixture
def commands(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, type[cli.Command]]]:
    """The registry, put back after the test (running an addon command registers it), and
    no command module left behind."""
    monkeypatch.setattr(cli, "COMMANDS", dict(cli.COMMANDS))
    yield cli.COMMANDS
    for name in [name for name in sys.modules if name.startswith("_devserve_command_")]:
        del sys.modules[name]


@pytest.fixture
def tools(tmp_path: Path, write_addon: WriteAddon, unique: Callable[[str], str]) -> Path:
    """An addons folder whose addon has the command ``greet``; returns the folder."""
    write_addon(
        tmp_path / "addons", unique("tools"), code=EXPLODING_INIT, files={"cli/greet.py": GREET}
    )
    return tmp_path / "addons"


def ran(addons: Path) -> bool:
    return any(addons.glob("*/cli/ran"))


def command_file(root: Path, addon: str, name: str, text: str) -> Path:
    path = root / addon / "cli" / f"{name}.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


# --- describe(): read without running ---


@pytest.mark.parametrize(
    ("source", "summary"),
    [
        ("class Greet(Command):\n    '''Say hi.\n\n    More.'''\n", "Say hi."),
        ("class Greet(cli.Command):\n    pass\n", ""),
        ("class Whatever(devserve.cli.Command):\n    name = 'greet'\n", ""),
        ("class Whatever(Command):\n    '''Typed.'''\n    name: str = 'greet'\n", "Typed."),
        ("class Base:\n    pass\nclass Greet(Base, Command):\n    '''Mixed.'''\n", "Mixed."),
    ],
)
def test_describe_finds_the_command_class_by_name(
    tmp_path: Path, source: str, summary: str
) -> None:
    path = command_file(tmp_path, "tools", "greet", "raise SystemExit('ran')\n" + source)
    command = addon_commands.describe(str(path), "tools")
    assert command == addon_commands.AddonCommand("greet", str(path), "tools", summary)


def test_a_file_without_a_command_class_is_a_helper(tmp_path: Path) -> None:
    path = command_file(tmp_path, "tools", "helpers", "class Greet:\n    pass\n")
    assert addon_commands.describe(str(path), "tools") is None


def test_a_command_not_named_like_its_file_is_reported(tmp_path: Path) -> None:
    path = command_file(tmp_path, "tools", "greet", "class Hello(Command):\n    pass\n")
    with pytest.raises(ConfigError) as caught:
        addon_commands.describe(str(path), "tools")
    message = str(caught.value)
    assert message.startswith(f"{path} declares command 'hello', not 'greet'")
    assert "set name = 'greet'" in message


def test_a_file_that_does_not_parse_names_file_and_line(tmp_path: Path) -> None:
    path = command_file(tmp_path, "tools", "greet", "x = 1\nclass Greet(Command:\n")
    with pytest.raises(
        AppLoadError, match=rf"cannot read command file {path}: SyntaxError.*line 2"
    ):
        addon_commands.describe(str(path), "tools")


# --- find(): every command of the addons path ---


def test_find_skips_private_files_non_addons_and_helpers(
    tmp_path: Path, write_addon: WriteAddon
) -> None:
    root = tmp_path / "addons"
    write_addon(root, "tools")
    command_file(root, "tools", "greet", "class Greet(Command):\n    '''Hi.'''\n")
    command_file(root, "tools", "__init__", "class Init(Command):\n    pass\n")
    command_file(root, "tools", "_private", "class _Private(Command):\n    pass\n")
    command_file(root, "tools", "helper", "VALUE = 1\n")
    command_file(root, "not_an_addon", "other", "class Other(Command):\n    pass\n")
    found = addon_commands.find([str(root)], reserved={})
    assert list(found.commands) == ["greet"]
    assert found.commands["greet"].summary == "Hi."
    assert found.problems == []


def test_find_only_one_name_reads_only_that_file(tmp_path: Path, write_addon: WriteAddon) -> None:
    root = tmp_path / "addons"
    write_addon(root, "tools")
    command_file(root, "tools", "greet", "class Greet(Command):\n    pass\n")
    command_file(root, "tools", "broken", "class Broken(Command:\n")
    found = addon_commands.find([str(root)], reserved={}, only="greet")
    assert list(found.commands) == ["greet"]
    assert found.problems == []


def test_a_command_declared_by_two_addons_names_both_files(
    tmp_path: Path, write_addon: WriteAddon
) -> None:
    root = tmp_path / "addons"
    for addon in ("alpha", "beta"):
        write_addon(root, addon)
    first = command_file(root, "alpha", "sync", "class Sync(Command):\n    '''A.'''\n")
    second = command_file(root, "beta", "sync", "class Sync(Command):\n    '''B.'''\n")
    found = addon_commands.find([str(root)], reserved={})
    assert found.commands["sync"].path == str(first)
    [problem] = found.problems
    assert isinstance(problem, ConfigError)
    assert str(problem) == (
        f"command 'sync' is declared twice, in {first} and {second}; rename one of them"
    )


def test_a_command_named_like_a_built_in_names_both_files(
    tmp_path: Path, write_addon: WriteAddon
) -> None:
    root = tmp_path / "addons"
    write_addon(root, "tools")
    path = command_file(root, "tools", "server", "class Server(Command):\n    pass\n")
    found = addon_commands.find([str(root)], reserved={"server": "/devserve/cli.py"})
    assert found.commands == {}
    [problem] = found.problems
    assert str(problem).startswith(
        f"{path} declares command 'server', which devserve defines (/devserve/cli.py)"
    )


def test_the_first_addons_path_wins_for_commands_too(
    tmp_path: Path, write_addon: WriteAddon
) -> None:
    for root in ("one", "two"):
        write_addon(tmp_path / root, "tools")
        command_file(tmp_path / root, "tools", "greet", f"class Greet(Command):\n    '{root}'\n")
    found = addon_commands.find([str(tmp_path / "two"), str(tmp_path / "one")], reserved={})
    assert found.commands["greet"].summary == "two"
    assert found.problems == []  # the addon in "one" is ignored as a whole, not a conflict


# --- devserve help ---


@pytest.mark.parametrize(
    "words", [["{addons}"], ["--addons-path", "{addons}"], ["--addons-path={addons}"]]
)
def test_help_lists_addon_commands_without_running_them(
    tools: Path, capsys: pytest.CaptureFixture[str], words: list[str]
) -> None:
    argv = ["help", *(word.format(addons=tools) for word in words)]
    assert cli.main(argv) == ExitCode.OK
    out, err = capsys.readouterr()
    assert err == ""
    addon = next(tools.iterdir()).name
    assert re.search(
        rf"^Addon commands:\n  greet\s+Say hello to each name\. \[addon {addon}\]$", out, re.M
    )
    assert "Details" not in out
    assert not ran(tools)


def test_help_reads_the_addons_path_from_the_environment(
    tools: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DEVSERVE_ADDONS_PATH", str(tools))
    assert cli.main(["help"]) == ExitCode.OK
    assert re.search(r"^  greet\s+Say hello", capsys.readouterr().out, re.M)


def test_help_warns_about_conflicts_and_lists_the_rest(
    tmp_path: Path, write_addon: WriteAddon, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "addons"
    write_addon(root, "tools")
    shadow = command_file(root, "tools", "help", "class Help(Command):\n    pass\n")
    command_file(root, "tools", "greet", "class Greet(Command):\n    '''Hi.'''\n")
    assert cli.main(["help", str(root)]) == ExitCode.OK
    out, err = capsys.readouterr()
    [warning] = err.splitlines()
    assert warning.startswith(f"devserve: warning: {shadow} declares command 'help', which")
    assert cli.__file__ in warning
    assert re.search(r"^  help\s+List the commands\.$", out, re.M)
    assert re.search(r"^  greet\s+Hi\. \[addon tools\]$", out, re.M)


# --- devserve <name> ---


@pytest.mark.parametrize(
    ("argv", "received"),
    [
        (["{addons}", "greet", "a", "b"], ["{addons}", "a", "b"]),
        (["--addons-path", "{addons}", "greet"], ["--addons-path", "{addons}"]),
        (["--addons-path={addons}", "greet", "x"], ["--addons-path={addons}", "x"]),
        (["greet", "x", "--addons-path", "{addons}"], ["x", "--addons-path", "{addons}"]),
        (["greet", "--addons-path={addons}"], ["--addons-path={addons}"]),
    ],
)
def test_addon_command_runs_with_the_words_around_its_name(
    tools: Path,
    commands: dict[str, type[cli.Command]],
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    received: list[str],
) -> None:
    assert not ran(tools)
    assert cli.main([word.format(addons=tools) for word in argv]) == 7
    assert capsys.readouterr().out == " ".join(["hello", *received]).format(addons=tools) + "\n"
    assert ran(tools)
    module = commands["greet"].__module__
    assert module.startswith("_devserve_command_")
    assert not any(name.startswith("devserve_addons.") for name in sys.modules)


@pytest.mark.parametrize("source", ["environment", "config file", "-c"])
def test_addon_command_found_through_the_settings(
    tools: Path,
    commands: dict[str, type[cli.Command]],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    isolated_cli: Path,
    source: str,
) -> None:
    argv = ["greet"]
    if source == "environment":
        monkeypatch.setenv("DEVSERVE_ADDONS_PATH", str(tools))
    else:
        rc = isolated_cli / (".devserverc" if source == "config file" else "other.conf")
        rc.write_text(f"[options]\naddons_path = {tools}\n")
        if source == "-c":
            argv = ["-c", str(rc), "greet"]
    assert cli.main(argv) == 7
    assert capsys.readouterr().out.startswith("hello")


def test_built_in_commands_never_look_at_addons(
    tmp_path: Path, write_addon: WriteAddon, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "addons"
    write_addon(root, "tools")
    command_file(root, "tools", "server", "raise SystemExit('ran')\nclass Server(Command):\n")
    assert cli.main(["--addons-path", str(root), "server", "--stop-after-init"]) == ExitCode.OK
    assert "stopping after init" in capsys.readouterr().err


def test_unknown_command_says_where_it_looked(
    tools: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main([str(tools), "greeet"]) == ExitCode.USAGE
    line = one_error_line(capsys)
    assert (
        "unknown command 'greeet' (known commands: gevent, help, reload, scaffold, server, "
        "status, stop; "
        f"no addon of {tools}" in line
    )
    assert "cli/greeet.py" in line


def test_command_declared_twice_is_an_error_naming_both_files(
    tmp_path: Path, write_addon: WriteAddon, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "addons"
    for addon in ("alpha", "beta"):
        write_addon(root, addon)
        command_file(
            root, addon, "sync", "raise SystemExit('ran')\nclass Sync(Command):\n    pass\n"
        )
    assert cli.main([str(root), "sync"]) == ExitCode.CONFIG
    line = one_error_line(capsys)
    assert str(root / "alpha" / "cli" / "sync.py") in line
    assert str(root / "beta" / "cli" / "sync.py") in line


@pytest.mark.parametrize(
    ("source", "code", "fragment"),
    [
        ("class Greet(Command):\n    x = (\n", ExitCode.APP_LOAD, "cannot read command file"),
        (
            "from devserve.cli import Command\nclass Greet(Command):\n    pass\n1 / 0\n",
            ExitCode.APP_LOAD,
            "failed to load: ZeroDivisionError: division by zero",
        ),
        (
            "class Greet(Command):\n    name = 'hello'\n",
            ExitCode.CONFIG,
            "declares command 'hello', not 'greet'",
        ),
        (
            "from devserve.cli import Command\nclass Greet(Command):\n    pass\ndel Greet\n",
            ExitCode.APP_LOAD,
            "defines no Command subclass named 'greet' when run",
        ),
    ],
)
def test_broken_command_file_is_one_line_and_its_exit_code(
    tmp_path: Path,
    write_addon: WriteAddon,
    commands: dict[str, type[cli.Command]],
    capsys: pytest.CaptureFixture[str],
    source: str,
    code: ExitCode,
    fragment: str,
) -> None:
    root = tmp_path / "addons"
    write_addon(root, "tools")
    path = command_file(root, "tools", "greet", source)
    assert cli.main([str(root), "greet"]) == code
    line = one_error_line(capsys)
    assert str(path) in line
    assert fragment in line
    assert not any(name.startswith("_devserve_command_") for name in sys.modules)


def test_a_command_class_cannot_take_a_name_already_defined(
    commands: dict[str, type[cli.Command]],
) -> None:
    with pytest.raises(ValueError) as caught:

        class Help(cli.Command):
            pass

    assert str(caught.value) == (
        f"command 'help' of {__file__} is already defined in {cli.__file__}; give it another name"
    )
    assert commands["help"] is cli.Help


def test_a_plain_server_start_imports_no_addon_machinery(tmp_path: Path) -> None:
    """Start-up is reload latency: serving an app must not pay for addons or commands."""
    (tmp_path / "plainapp.py").write_text("def app(environ, start_response):\n    return []\n")
    code = (
        "import sys\nfrom devserve import cli\n"
        "code = cli.main(['plainapp:app', '--stop-after-init'])\n"
        "extra = {'devserve.addons', 'devserve.addon_commands', 'devserve.scaffold'}\n"
        "print(code, sorted(extra & set(sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert result.stdout == "0 []\n", result.stderr
