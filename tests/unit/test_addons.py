from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from devserve import addons
from devserve.errors import AppLoadError, ConfigError
from tests.unit.conftest import WriteAddon

Unique = Callable[[str], str]


def names(found: list[addons.Addon]) -> list[str]:
    return [addon.name for addon in found]


def test_discover_finds_addons_and_skips_other_folders(
    tmp_path: Path, write_addon: WriteAddon
) -> None:
    write_addon(tmp_path, "real", files={"static/app.css": "body {}"})
    (tmp_path / "no_manifest").mkdir()
    (tmp_path / "no_manifest" / "__init__.py").write_text("")
    (tmp_path / "no_init").mkdir()
    (tmp_path / "no_init" / "__manifest__.py").write_text("{}")
    (tmp_path / "manifest_is_a_folder").mkdir()
    (tmp_path / "manifest_is_a_folder" / "__init__.py").write_text("")
    (tmp_path / "manifest_is_a_folder" / "__manifest__.py").mkdir()
    (tmp_path / "loose_file.py").write_text("")
    (tmp_path / "not-a-package").mkdir()  # not an addon, so its name does not matter

    [addon] = addons.discover([str(tmp_path)])
    assert addon.name == "real"
    assert addon.path == str(tmp_path / "real")
    assert addon.module == "devserve_addons.real"
    assert addon.static_dir == str(tmp_path / "real" / "static")
    assert addon.manifest == {"name": "real", "version": "1.0", "summary": "", "depends": []}


def test_manifest_gets_defaults_for_the_known_keys_it_leaves_out(
    tmp_path: Path, write_addon: WriteAddon
) -> None:
    write_addon(tmp_path, "bare", manifest="{}  # a comment\n")
    [addon] = addons.discover([str(tmp_path)])
    assert addon.manifest == {"name": "bare", "version": "1.0", "summary": "", "depends": []}
    assert addon.depends == ()


def test_manifest_keeps_its_values_and_its_unknown_keys(
    tmp_path: Path, write_addon: WriteAddon
) -> None:
    manifest = {
        "name": "Shop",
        "version": "17.0.1.2",
        "summary": "Sells things.",
        "depends": ("base",),
        "license": "LGPL-3",
        "data": ["views.xml"],
        "installable": True,
    }
    write_addon(tmp_path, "base")
    write_addon(tmp_path, "shop", manifest=repr(manifest))
    [_base, shop] = addons.discover([str(tmp_path)])
    assert shop.manifest == {**manifest, "depends": ["base"]}
    assert shop.depends == ("base",)


def test_manifest_code_is_rejected_and_never_run(tmp_path: Path, write_addon: WriteAddon) -> None:
    marker = tmp_path / "manifest-ran"
    attack = f"open({str(marker)!r}, 'w').write('ran')"
    write_addon(tmp_path / "addons", "sneaky", manifest=f"{{'name': 'Sneaky', 'x': {attack}}}")
    with pytest.raises(ConfigError, match=r"sneaky.__manifest__\.py.*a manifest is one dict"):
        addons.discover([str(tmp_path / "addons")])
    assert not marker.exists()


@pytest.mark.parametrize(
    ("manifest", "fragment"),
    [
        ("['name']", "holds a list, not a dict literal"),
        ("'just a string'", "holds a str, not a dict literal"),
        ("{'name': 'x',", "SyntaxError"),
        ("", "SyntaxError"),
        ("{[1]: 'unhashable key'}", "TypeError"),
        ("{'depends': 'base'}", "'depends' in .* must be a list of addon names, not 'base'"),
        ("{'depends': ['base', 3]}", "'depends' in .* must be a list of addon names"),
        ("{'depends': None}", "'depends' in .* must be a list of addon names, not None"),
        ("{'name': 3}", "'name' in .* must be a string, not 3"),
        ("{'name': '  '}", "'name' in .* must not be empty"),
        ("{'summary': ['a']}", r"'summary' in .* must be a string, not \['a'\]"),
        ("{'version': 1.0}", "'version' in .* must be a string, not 1.0"),
        ("{'version': 'one'}", "'version' in .* must be dotted numbers such as '1.0'"),
        ("{'version': '1.0-beta'}", "'version' in .* must be dotted numbers"),
        ("{'version': '1..0'}", "'version' in .* must be dotted numbers"),
        ("{'version': ''}", "'version' in .* must be dotted numbers"),
    ],
)
def test_bad_manifest_is_a_config_error(
    tmp_path: Path, write_addon: WriteAddon, manifest: str, fragment: str
) -> None:
    write_addon(tmp_path, "broken", manifest=manifest)
    with pytest.raises(ConfigError, match=fragment) as caught:
        addons.discover([str(tmp_path)])
    assert str(tmp_path / "broken" / "__manifest__.py") in str(caught.value)


def test_addon_folder_must_be_a_package_name(tmp_path: Path, write_addon: WriteAddon) -> None:
    write_addon(tmp_path, "my-addon")
    with pytest.raises(ConfigError, match=r"my-addon.* must be named like a Python package"):
        addons.discover([str(tmp_path)])


def test_dependencies_come_first(tmp_path: Path, write_addon: WriteAddon) -> None:
    # Alphabetical order is the reverse of dependency order.
    write_addon(tmp_path, "alpha", depends=["beta"])
    write_addon(tmp_path, "beta", depends=["gamma"])
    write_addon(tmp_path, "gamma")
    assert names(addons.discover([str(tmp_path)])) == ["gamma", "beta", "alpha"]


def test_every_addon_follows_its_dependencies(tmp_path: Path, write_addon: WriteAddon) -> None:
    graph = {
        "web": [],
        "mail": ["web"],
        "sale": ["mail", "stock"],
        "stock": ["web"],
        "account": ["sale", "web"],
        "alone": [],
    }
    for name, depends in graph.items():
        write_addon(tmp_path, name, depends=depends)
    order = names(addons.discover([str(tmp_path)]))
    assert sorted(order) == sorted(graph)
    for name, depends in graph.items():
        for dependency in depends:
            assert order.index(dependency) < order.index(name), (dependency, name)


def test_missing_dependency_names_both_addons(tmp_path: Path, write_addon: WriteAddon) -> None:
    write_addon(tmp_path, "shop", depends=["payment", "catalog"])
    write_addon(tmp_path, "catalog")
    with pytest.raises(ConfigError) as caught:
        addons.discover([str(tmp_path)])
    message = str(caught.value)
    assert "addon 'shop' depends on 'payment'" in message
    assert f"not in the addons path ({tmp_path})" in message
    assert "'catalog'" not in message


def test_dependency_cycle_names_the_addons(tmp_path: Path, write_addon: WriteAddon) -> None:
    write_addon(tmp_path, "egg", depends=["hen"])
    write_addon(tmp_path, "hen", depends=["egg"])
    write_addon(tmp_path, "bystander")
    with pytest.raises(ConfigError, match="cycle") as caught:
        addons.discover([str(tmp_path)])
    message = str(caught.value)
    assert "egg" in message
    assert "hen" in message
    assert "bystander" not in message


def test_addon_depending_on_itself_is_a_cycle(tmp_path: Path, write_addon: WriteAddon) -> None:
    write_addon(tmp_path, "ouroboros", depends=["ouroboros"])
    with pytest.raises(ConfigError, match="cycle: ouroboros -> ouroboros; drop one"):
        addons.discover([str(tmp_path)])


@pytest.mark.parametrize("first", ["one", "two"])
def test_first_addons_path_wins_for_a_duplicate_name(
    tmp_path: Path,
    write_addon: WriteAddon,
    unique: Unique,
    caplog: pytest.LogCaptureFixture,
    first: str,
) -> None:
    name = unique("twin")
    for root in ("one", "two"):
        write_addon(tmp_path / root, name, code=f"WHERE = {root!r}\n")
    second = "two" if first == "one" else "one"
    paths = [str(tmp_path / first), str(tmp_path / second)]

    with caplog.at_level(logging.WARNING, logger="devserve.addons"):
        found = addons.discover(paths)
    [module] = addons.import_addons(found, paths)

    assert [addon.path for addon in found] == [str(tmp_path / first / name)]
    where = module.WHERE
    assert where == first
    [record] = [r for r in caplog.records if r.name == "devserve.addons"]
    assert record.levelno == logging.WARNING
    message = record.getMessage()
    assert f"addon {name!r} in {tmp_path / second / name} is ignored" in message
    assert f"{tmp_path / first / name} comes first" in message


def test_a_folder_given_twice_is_no_duplicate(
    tmp_path: Path, write_addon: WriteAddon, caplog: pytest.LogCaptureFixture
) -> None:
    write_addon(tmp_path, "once")
    with caplog.at_level(logging.WARNING, logger="devserve.addons"):
        found = addons.discover([str(tmp_path), str(tmp_path)])
    assert names(found) == ["once"]
    assert caplog.records == []


def test_dependency_can_live_in_another_addons_path(
    tmp_path: Path, write_addon: WriteAddon
) -> None:
    write_addon(tmp_path / "custom", "theme", depends=["base"])
    write_addon(tmp_path / "core", "base")
    found = addons.discover([str(tmp_path / "custom"), str(tmp_path / "core")])
    assert names(found) == ["base", "theme"]


def test_folder_without_addons_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "just_a_folder").mkdir()
    with pytest.raises(ConfigError) as caught:
        addons.discover([str(tmp_path)])
    message = str(caught.value)
    assert message.startswith(f"no addon found in {tmp_path}:")
    assert "__init__.py and __manifest__.py" in message


def test_import_addons_imports_in_order_under_the_namespace(
    tmp_path: Path, write_addon: WriteAddon, unique: Unique
) -> None:
    base, child = unique("base"), unique("child")
    write_addon(
        tmp_path,
        base,
        code="from . import models\nLOADED = []\n",
        files={"models.py": "KIND = 'model'\n"},
    )
    write_addon(
        tmp_path,
        child,
        depends=[base],
        code=f"from devserve_addons.{base} import LOADED\nLOADED.append(__name__)\n",
    )
    found = addons.discover([str(tmp_path)])
    modules = addons.import_addons(found, [str(tmp_path)])

    assert [m.__name__ for m in modules] == [f"devserve_addons.{base}", f"devserve_addons.{child}"]
    loaded = modules[0].LOADED
    assert loaded == [f"devserve_addons.{child}"]
    assert modules[0].models.KIND == "model"
    assert sys.modules[f"devserve_addons.{base}.models"] is modules[0].models
    assert modules[0].__file__ == str(tmp_path / base / "__init__.py")


def test_import_error_names_addon_file_and_line(
    tmp_path: Path, write_addon: WriteAddon, unique: Unique
) -> None:
    name = unique("broken")
    write_addon(tmp_path, name, code="import os\n\nvalue = undefined_name\n")
    found = addons.discover([str(tmp_path)])
    with pytest.raises(AppLoadError) as caught:
        addons.import_addons(found, [str(tmp_path)])
    message = str(caught.value)
    assert message.startswith(f"addon {name!r} failed to import: NameError:")
    assert "undefined_name" in message
    assert f"({tmp_path / name / '__init__.py'}, line 3)" in message
    assert isinstance(caught.value.__cause__, NameError)


def test_import_error_in_a_submodule_names_that_file(
    tmp_path: Path, write_addon: WriteAddon, unique: Unique
) -> None:
    name = unique("deep")
    write_addon(
        tmp_path,
        name,
        code="from . import controllers\n",
        files={"controllers.py": "x = 1\ny = 2\nraise RuntimeError('boom')\n"},
    )
    found = addons.discover([str(tmp_path)])
    with pytest.raises(AppLoadError) as caught:
        addons.import_addons(found, [str(tmp_path)])
    message = str(caught.value)
    assert "RuntimeError: boom" in message
    assert f"({tmp_path / name / 'controllers.py'}, line 3)" in message


def test_syntax_error_in_an_addon_names_file_and_line(
    tmp_path: Path, write_addon: WriteAddon, unique: Unique
) -> None:
    name = unique("typo")
    write_addon(tmp_path, name, code="def ok():\n    pass\n\ndef broken(:\n    pass\n")
    found = addons.discover([str(tmp_path)])
    with pytest.raises(AppLoadError) as caught:
        addons.import_addons(found, [str(tmp_path)])
    message = str(caught.value)
    assert "SyntaxError" in message
    assert f"({tmp_path / name / '__init__.py'}, line 4)" in message


def test_an_unreadable_addons_folder_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(path: str) -> list[str]:
        raise PermissionError(13, "Permission denied", path)

    monkeypatch.setattr(addons.os, "listdir", refused)
    with pytest.raises(ConfigError, match=r"cannot read addons path .*: Permission denied; "):
        addons.discover([str(tmp_path)])


def test_a_gone_addons_folder_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read addons path .*gone: No such file"):
        addons.discover([str(tmp_path / "gone")])
