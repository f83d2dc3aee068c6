"""Every bad input ends in one line on stderr naming the fix, and its exit code."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from devserve.errors import ExitCode
from tests.integration.harness import (
    APPS,
    EXAMPLE_ADDONS,
    assert_one_line_error,
    devserve_command,
    run_cli,
)


@pytest.mark.parametrize(
    ("args", "code", "fragments"),
    [
        (
            ["frobnicate"],
            ExitCode.USAGE,
            [
                "unknown command 'frobnicate'",
                "gevent, help, reload, scaffold, server, status, stop",
            ],
        ),
        (["--no-such-option"], ExitCode.USAGE, ["--no-such-option", "--help"]),
        (["-p", "http"], ExitCode.USAGE, ["-p/--http-port", "'http' is not a port number"]),
        (["-p", "70000"], ExitCode.USAGE, ["not a port number"]),
        (["--max-http-threads", "0"], ExitCode.USAGE, ["must be 1 or more"]),
        (
            ["--dev", "relaod"],
            ExitCode.USAGE,
            ["'relaod'", "reload, werkzeug, pdb, ipdb, pudb, all"],
        ),
        (["--log-level", "loud"], ExitCode.USAGE, ["not a log level"]),
        (["-c", "/no/such/devserve.conf"], ExitCode.CONFIG, ["cannot read config file"]),
        (["/no/such/addons"], ExitCode.CONFIG, ["'/no/such/addons' does not exist"]),
        (["--addons-path", "/no/such/addons"], ExitCode.USAGE, ["--addons-path", "does not exist"]),
        (["nosuchmodule:app"], ExitCode.APP_LOAD, ["no module named 'nosuchmodule'"]),
        (["slowapp:nope"], ExitCode.APP_LOAD, ["has no attribute 'nope'"]),
        (["slowapp:app("], ExitCode.CONFIG, ["not module:attribute"]),
        ([], ExitCode.CONFIG, ["nothing to serve"]),
    ],
)
def test_bad_command_line(
    args: list[str], code: ExitCode, fragments: list[str], env: dict[str, str]
) -> None:
    assert_one_line_error(run_cli(args, cwd=APPS, env=env), code, *fragments)


def test_invalid_config_file(tmp_path: Path, env: dict[str, str]) -> None:
    config = tmp_path / "broken.conf"
    config.write_text("this is not [ini\n")
    result = run_cli(["-c", str(config)], cwd=tmp_path, env=env)
    assert_one_line_error(result, ExitCode.CONFIG, "not a valid INI file")


def test_bad_value_in_config_file(tmp_path: Path, env: dict[str, str]) -> None:
    config = tmp_path / "bad.conf"
    config.write_text("[options]\nhttp_port = eighty\n")
    result = run_cli(["-c", str(config), str(EXAMPLE_ADDONS)], cwd=tmp_path, env=env)
    assert_one_line_error(result, ExitCode.CONFIG, "http_port", str(config), "not a port number")


def test_bad_environment_variable(tmp_path: Path, env: dict[str, str]) -> None:
    result = run_cli([str(EXAMPLE_ADDONS)], cwd=tmp_path, env={**env, "DEVSERVE_HTTP_PORT": "x"})
    assert_one_line_error(result, ExitCode.CONFIG, "DEVSERVE_HTTP_PORT")


def test_folder_without_addons(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "empty").mkdir()
    result = run_cli([str(tmp_path / "empty")], cwd=tmp_path, env=env)
    assert_one_line_error(result, ExitCode.CONFIG, "no addon found", "__manifest__.py")


def test_app_that_raises_at_import(tmp_path: Path, env: dict[str, str]) -> None:
    (tmp_path / "brokenapp.py").write_text("import os\n\nvalue = undefined_name\n")
    result = run_cli(["brokenapp:app"], cwd=tmp_path, env=env)
    assert_one_line_error(
        result, ExitCode.APP_LOAD, "NameError", "undefined_name", "brokenapp.py, line 3"
    )


def test_port_already_in_use(env: dict[str, str]) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_cli(["-p", str(port), "slowapp:app"], cwd=APPS, env=env)
    assert_one_line_error(result, ExitCode.BIND, f"port {port} is already in use", "-p")


def test_interface_not_on_this_machine(env: dict[str, str]) -> None:
    # TEST-NET-1 (RFC 5737): never assigned to a local interface, so bind() fails at once.
    result = run_cli(["--http-interface", "192.0.2.1", "slowapp:app"], cwd=APPS, env=env)
    assert_one_line_error(result, ExitCode.BIND, "not an address of this machine")


def test_permission_denied_on_a_privileged_port(env: dict[str, str]) -> None:
    command = devserve_command()
    if os.geteuid() == 0:
        # root may bind port 80: run as nobody, which may not.
        setpriv = shutil.which("setpriv")
        assert setpriv, "setpriv (util-linux) is needed to drop root for this test"
        command = [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", *command]
    result = run_cli(["-p", "80", "slowapp:app"], cwd=APPS, env=env, command=command)
    assert_one_line_error(result, ExitCode.BIND, "permission denied", "port")
