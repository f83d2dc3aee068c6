"""Addons through the real CLI: manifest errors, the addons path order, addon commands,
and ``devserve scaffold`` served right away."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from devserve.errors import ExitCode
from tests.integration.conftest import StartDevserve
from tests.integration.harness import assert_one_line_error, run_cli, write_addon

# --- manifests: one line, exit 3, no traceback ---


@pytest.mark.parametrize(
    ("manifest", "fragments"),
    [
        ("{'version': 2}", ["'version' in {manifest} must be a string, not 2"]),
        ("{'version': 'v2'}", ["'version' in {manifest} must be dotted numbers"]),
        ("{'name': None}", ["'name' in {manifest} must be a string, not None"]),
        ("{'summary': 3}", ["'summary' in {manifest} must be a string"]),
        ("{'depends': 'base'}", ["'depends' in {manifest} must be a list of addon names"]),
        ("{'depends': ['payment']}", ["addon 'shop' depends on 'payment'", "{root}"]),
        ("{'name': 'Shop',", ["cannot read {manifest}: SyntaxError", "one dict literal"]),
        ("{'data': open('x')}", ["cannot read {manifest}: ValueError"]),
    ],
)
def test_bad_manifest_is_one_line_and_exit_3(
    tmp_path: Path, env: dict[str, str], manifest: str, fragments: list[str]
) -> None:
    root = tmp_path / "addons"
    folder = write_addon(root, "shop", manifest=manifest)
    result = run_cli(["-p", "0", str(root)], cwd=tmp_path, env=env)
    places = {"manifest": folder / "__manifest__.py", "root": root}
    assert_one_line_error(result, ExitCode.CONFIG, *(f.format(**places) for f in fragments))


def test_dependency_cycle_is_one_line_naming_the_addons(
    tmp_path: Path, env: dict[str, str]
) -> None:
    root = tmp_path / "addons"
    write_addon(root, "egg", manifest="{'depends': ['hen']}")
    write_addon(root, "hen", manifest="{'depends': ['egg']}")
    write_addon(root, "bystander")
    result = run_cli(["-p", "0", str(root)], cwd=tmp_path, env=env)
    line = assert_one_line_error(result, ExitCode.CONFIG, "in a cycle:")
    assert re.search(r"cycle: (egg -> hen -> egg|hen -> egg -> hen);", line)
    assert "bystander" not in line


# --- several addons folders ---


CONTROLLER = """\
    from devserve.http import Controller, route


    class Where(Controller):
        @route("/{route}")
        def where(self):
            return {where!r}
"""


def test_first_folder_wins_and_the_duplicate_is_logged(
    devserve: StartDevserve, tmp_path: Path
) -> None:
    for where in ("custom", "core"):
        write_addon(
            tmp_path / where,
            "site",
            init="from . import controllers\n",
            files={"controllers.py": CONTROLLER.format(route="where", where=where)},
        )
    write_addon(
        tmp_path / "core",
        "base",
        init="from . import controllers\n",
        files={"controllers.py": CONTROLLER.format(route="base", where="core base")},
    )
    paths = f"{tmp_path / 'custom'},{tmp_path / 'core'}"
    server = devserve("-p", "0", "--addons-path", paths)
    assert server.request("/where").text == "custom"
    assert server.request("/base").text == "core base"  # the rest of core is served
    server.wait_for_log(
        rf"WARNING devserve\.addons: addon 'site' in {re.escape(str(tmp_path / 'core' / 'site'))} "
        rf"is ignored: {re.escape(str(tmp_path / 'custom' / 'site'))} comes first"
    )


# --- addon commands ---

GREET = '''\
    import pathlib

    from devserve.cli import Command

    (pathlib.Path(__file__).parent / "ran").write_text("yes")  # a trace of each execution


    class Greet(Command):
        """Say hello to each name."""

        def run(self, args):
            print("hello", *args)
            return 7
'''


@pytest.fixture
def tools(tmp_path: Path) -> Path:
    """Addons whose package raises when imported: commands must never import it."""
    root = tmp_path / "addons"
    write_addon(
        root,
        "tools",
        init="raise RuntimeError('the addon package was imported')\n",
        files={"cli/greet.py": GREET},
    )
    return root


def test_addon_command_runs_without_importing_its_addon(
    tools: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    result = run_cli(["--addons-path", str(tools), "greet", "ada"], cwd=tmp_path, env=env)
    assert (result.returncode, result.stdout, result.stderr) == (
        7,
        f"hello --addons-path {tools} ada\n",
        "",
    )
    result = run_cli(
        ["greet", "bob"], cwd=tmp_path, env={**env, "DEVSERVE_ADDONS_PATH": str(tools)}
    )
    assert (result.returncode, result.stdout) == (7, "hello bob\n")


def test_help_lists_addon_commands_without_running_them(
    tools: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    Path(env["HOME"], ".devserverc").write_text(f"[options]\naddons_path = {tools}\n")
    result = run_cli(["help"], cwd=tmp_path, env=env)
    assert result.returncode == ExitCode.OK, result.stderr
    assert result.stderr == ""
    assert re.search(
        r"^Addon commands:\n  greet\s+Say hello to each name\. \[addon tools\]$",
        result.stdout,
        re.M,
    )
    assert not (tools / "tools" / "cli" / "ran").exists()


def test_conflicting_addon_commands(tools: Path, tmp_path: Path, env: dict[str, str]) -> None:
    write_addon(
        tools,
        "more",
        files={"cli/greet.py": GREET, "cli/server.py": GREET.replace("Greet", "Server")},
    )
    first, second = tools / "more" / "cli" / "greet.py", tools / "tools" / "cli" / "greet.py"
    result = run_cli([str(tools), "greet"], cwd=tmp_path, env=env)
    assert_one_line_error(result, ExitCode.CONFIG, f"declared twice, in {first} and {second}")

    result = run_cli(["help", str(tools)], cwd=tmp_path, env=env)
    assert result.returncode == ExitCode.OK
    warnings = result.stderr.splitlines()
    assert len(warnings) == 2, result.stderr
    assert all(line.startswith("devserve: warning: ") for line in warnings)
    assert "which devserve defines" in result.stderr
    assert re.search(r"^  greet\s+Say hello to each name\. \[addon more\]$", result.stdout, re.M)
    assert not any(tools.glob("*/cli/ran"))


def test_broken_addon_command_is_one_line(tools: Path, tmp_path: Path, env: dict[str, str]) -> None:
    path = tools / "tools" / "cli" / "greet.py"
    path.write_text("from devserve.cli import Command\n\nclass Greet(Command)\n    pass\n")
    result = run_cli([str(tools), "greet"], cwd=tmp_path, env=env)
    assert_one_line_error(
        result, ExitCode.APP_LOAD, f"cannot read command file {path}: SyntaxError", "line 3"
    )


# --- scaffold ---


def test_scaffold_is_served_right_away_and_its_test_passes(
    devserve: StartDevserve, tmp_path: Path, env: dict[str, str]
) -> None:
    dest = tmp_path / "my addons"
    result = run_cli(["scaffold", "shop", str(dest)], cwd=tmp_path, env=env)
    assert result.returncode == ExitCode.OK, result.stderr
    assert f"created addon 'shop' in {dest / 'shop'}" in result.stdout

    server = devserve("-p", "0", str(dest))
    page = server.request("/shop")
    assert page.status == 200
    assert page.headers["Content-Type"].startswith("text/html")
    assert "<h1>Shop</h1>" in page.text
    css = server.request("/shop/static/style.css")
    assert css.status == 200
    assert css.headers["Content-Type"].startswith("text/css")
    assert css.body == (dest / "shop" / "static" / "style.css").read_bytes()

    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "shop/tests"],
        cwd=dest,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=50,
    )
    assert tests.returncode == 0, tests.stdout + tests.stderr
    assert "2 passed" in tests.stdout

    again = run_cli(["scaffold", "shop", str(dest)], cwd=tmp_path, env=env)
    assert_one_line_error(again, ExitCode.USAGE, "already exists")
