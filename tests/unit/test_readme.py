"""The README shows what the code declares."""

from pathlib import Path

from devserve import cli
from devserve.config import reference_table

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_settings_table_matches_the_declarations() -> None:
    start = README.index("<!-- settings:")
    start = README.index("\n", start) + 1
    end = README.index("<!-- /settings -->")
    assert README[start:end].strip() == reference_table()


def test_every_command_is_documented() -> None:
    for name in cli.COMMANDS:
        assert f"| `{name}` |" in README


def test_every_exit_code_is_documented() -> None:
    from devserve.errors import ExitCode

    for code in ExitCode:
        assert f"| {int(code)} |" in README
