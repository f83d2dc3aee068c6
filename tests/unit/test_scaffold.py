"""``devserve scaffold NAME [DEST]``: the files it writes, and what it refuses."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from devserve import addons, cli, scaffold
from devserve.errors import ExitCode, UsageError
from tests.unit.conftest import one_error_line

pytestmark = pytest.mark.usefixtures("isolated_cli")

SKELETON = [
    "__init__.py",
    "__manifest__.py",
    "controllers.py",
    "static/style.css",
    "tests/test_my_shop.py",
]


def files_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())


def test_creates_the_skeleton(tmp_path: Path) -> None:
    folder = Path(scaffold.create("my_shop", str(tmp_path / "addons")))
    assert folder == tmp_path / "addons" / "my_shop"
    assert files_under(folder) == sorted(SKELETON)
    manifest = addons.read_manifest(str(folder / "__manifest__.py"), "my_shop")
    assert manifest["name"] == "My Shop"
    assert manifest["depends"] == []
    controllers = (folder / "controllers.py").read_text()
    assert "class MyShopController(Controller):" in controllers
    assert '@route("/my_shop", methods=["GET"])' in controllers
    assert '<link rel="stylesheet" href="/my_shop/static/style.css">' in controllers
    for python in folder.rglob("*.py"):
        ast.parse(python.read_text(), str(python))  # every file is valid Python
    assert "$" not in "".join(path.read_text() for path in folder.rglob("*") if path.is_file())
    assert [addon.name for addon in addons.discover([str(tmp_path / "addons")])] == ["my_shop"]


@pytest.mark.parametrize(
    ("name", "title", "class_name"),
    [
        ("shop", "Shop", "ShopController"),
        ("_x2", "X2", "X2Controller"),
        ("a__b", "A B", "ABController"),
    ],
)
def test_title_and_class_come_from_the_name(name: str, title: str, class_name: str) -> None:
    values = scaffold._values(name)
    assert (values["title"], values["class_name"]) == (title, class_name)


def test_dest_defaults_to_the_current_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(["scaffold", "shop"]) == ExitCode.OK
    assert (tmp_path / "shop" / "__manifest__.py").is_file()
    out = capsys.readouterr().out
    assert f"created addon 'shop' in {tmp_path / 'shop'}\n" in out
    assert f"serve it with: devserve {tmp_path}" in out


def test_an_existing_folder_is_never_overwritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "shop").mkdir()
    (tmp_path / "shop" / "__init__.py").write_text("# mine\n")
    assert cli.main(["scaffold", "shop", str(tmp_path)]) == ExitCode.USAGE
    line = one_error_line(capsys)
    assert f"{tmp_path / 'shop'} already exists; scaffold never overwrites" in line
    assert files_under(tmp_path / "shop") == ["__init__.py"]
    assert (tmp_path / "shop" / "__init__.py").read_text() == "# mine\n"


@pytest.mark.parametrize("name", ["9lives", "my-shop", "my shop", "class", "", "shop/sub"])
def test_name_must_be_an_identifier(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str
) -> None:
    assert cli.main(["scaffold", name]) == ExitCode.USAGE
    line = one_error_line(capsys)
    assert f"{name!r} cannot name an addon: use a Python identifier" in line
    assert list(tmp_path.iterdir()) == [tmp_path / "home"]  # nothing written


def test_dest_that_is_a_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match=r"file is not a folder: give DEST an addons folder"):
        scaffold.create("shop", str(tmp_path / "file"))


def test_missing_name_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["scaffold"]) == ExitCode.USAGE
    assert "NAME" in one_error_line(capsys)
