"""What the project wrote: its folders from the modules imported, config files, static files."""

from __future__ import annotations

import os
import site
import sysconfig
import types
from pathlib import Path

import pytest

from devserve import project


def module(name: str, path: Path, package: bool = False) -> types.ModuleType:
    made = types.ModuleType(name)
    made.__file__ = str(path)
    if package:
        made.__path__ = [str(path.parent)]
    return made


def django_layout(root: Path) -> dict[str, types.ModuleType]:
    """The modules of a Django project: the settings package and an app beside it."""
    for folder in ("mysite", "shop", "shop/migrations"):
        (root / folder).mkdir(parents=True)
        (root / folder / "__init__.py").write_text("")
    return {
        "mysite": module("mysite", root / "mysite" / "__init__.py", package=True),
        "mysite.settings": module("mysite.settings", root / "mysite" / "settings.py"),
        "mysite.wsgi": module("mysite.wsgi", root / "mysite" / "wsgi.py"),
        "shop": module("shop", root / "shop" / "__init__.py", package=True),
        "shop.views": module("shop.views", root / "shop" / "views.py"),
        "shop.migrations": module(
            "shop.migrations", root / "shop" / "migrations" / "__init__.py", package=True
        ),
    }


def test_the_settings_package_and_the_app_beside_it_are_both_roots(tmp_path: Path) -> None:
    roots = project.module_roots(django_layout(tmp_path))
    assert sorted(roots) == [str(tmp_path / "mysite"), str(tmp_path / "shop")]


def test_a_lone_module_gives_its_folder(tmp_path: Path) -> None:
    modules = {"app": module("app", tmp_path / "app.py")}
    assert project.module_roots(modules) == [str(tmp_path)]


def test_a_lone_module_folder_holds_the_packages_beside_it(tmp_path: Path) -> None:
    modules = {**django_layout(tmp_path), "app": module("app", tmp_path / "app.py")}
    assert project.module_roots(modules) == [str(tmp_path)]


def test_library_modules_devserve_and_main_are_not_the_project(tmp_path: Path) -> None:
    library = Path(sysconfig.get_paths()["stdlib"])
    installed = Path(site.getsitepackages()[0])
    script = module("__main__", tmp_path / "bin" / "devserve")
    modules = {
        "json": module("json", library / "json" / "__init__.py", package=True),
        "django.conf": module("django.conf", installed / "django" / "conf" / "__init__.py"),
        "vendored": module("vendored", tmp_path / "venv" / "lib" / "site-packages" / "v.py"),
        "debian": module("debian", Path("/usr/lib/python3/dist-packages/debian/__init__.py")),
        "devserve.cli": module("devserve.cli", Path(project.__file__).with_name("cli.py")),
        "__main__": script,
        "__mp_main__": script,  # multiprocessing's alias of __main__
        "builtin": types.ModuleType("builtin"),  # no __file__
        "gone": None,  # type: ignore[dict-item]  # a failed import leaves None
    }
    assert project.module_roots(modules) == []


def test_a_module_imported_under_another_name_gives_its_own_folder(tmp_path: Path) -> None:
    addon = tmp_path / "addons" / "hello"
    modules = {
        "devserve_addons.hello": module(
            "devserve_addons.hello", addon / "__init__.py", package=True
        ),
        "devserve_addons.hello.controllers": module(
            "devserve_addons.hello.controllers", addon / "controllers.py"
        ),
    }
    assert project.module_roots(modules) == [str(addon)]


def test_collapse_keeps_the_outermost_folders_in_order(tmp_path: Path) -> None:
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert project.collapse([b, f"{a}/x", a, b, f"{b}/y/z", f"{a}x"]) == [b, a, f"{a}x"]


def test_is_library() -> None:
    assert project.is_library(sysconfig.get_paths()["stdlib"] + "/json/__init__.py")
    assert project.is_library(site.getsitepackages()[0] + "/werkzeug")
    assert project.is_library("/home/me/project/.venv/lib/python3.11/site-packages/x.py")
    assert not project.is_library("/home/me/project/shop/views.py")


def test_config_files_of_the_project_folder(tmp_path: Path) -> None:
    names = ("pyproject.toml", "setup.cfg", "tox.ini", "config.yaml", "notes.txt", "db.sqlite3")
    for name in names:
        (tmp_path / name).write_text("")
    (tmp_path / "conf.toml").mkdir()  # a folder, not a file
    found = project.config_files([str(tmp_path), str(tmp_path)])
    names = [os.path.basename(path) for path in found]
    # .env is watched before it exists: creating it counts
    assert names == [".env", "config.yaml", "pyproject.toml", "setup.cfg", "tox.ini"]


def test_config_files_of_a_missing_folder() -> None:
    assert project.config_files(["/no/such/folder"]) == ["/no/such/folder/.env"]


@pytest.mark.parametrize(
    ("relative", "static"),
    [
        ("shop/static/shop/site.css", True),
        ("shop/static/page.html", True),
        ("shop/templates/page.html", False),
        ("shop/views.py", False),
        ("assets/app.js", True),  # under a framework's static folder
        ("static", False),  # a file named static
    ],
)
def test_is_static(tmp_path: Path, relative: str, static: bool) -> None:
    root = tmp_path / "static" / "project"  # "static" above the root does not count
    path = str(root / relative)
    assert project.is_static(path, [str(root)], [str(root / "assets")]) is static


def test_default_include_covers_templates_translations_and_config() -> None:
    from devserve.watcher import PathFilter

    path_filter = PathFilter(project.DEFAULT_INCLUDE)
    root = "/p/shop"
    for relative in (
        "views.py",
        "templates/shop/page.html",
        "templates/shop/email.txt",
        "jinja/page.jinja2",
        "mail.j2",
        "locale/fr/LC_MESSAGES/django.mo",
        ".env",
        "settings.toml",
        "app.ini",
        "setup.cfg",
        "config.yaml",
        "config.yml",
    ):
        assert path_filter.matches(f"{root}/{relative}", root), relative
    for relative in ("notes.txt", "db.sqlite3", "locale/fr/LC_MESSAGES/django.po", "app.log"):
        assert not path_filter.matches(f"{root}/{relative}", root), relative
    # a watched templates folder itself: every file in it counts
    assert path_filter.matches("/p/templates/email.txt", "/p/templates")


def test_modules_are_read_without_running_their_getattr(tmp_path: Path) -> None:
    class Trap(types.ModuleType):
        def __getattr__(self, name: str) -> object:
            raise RuntimeError(f"{name} looked up")

    lazy = Trap("lazy")
    lazy.__file__ = str(tmp_path / "lazy.py")
    modules = {
        "lazy": lazy,
        "not_a_module": object(),  # some libraries put other objects in sys.modules
        "debugpy": module("debugpy", tmp_path / "ide" / "debugpy" / "__init__.py", True),
        "_pydevd_bundle.x": module("_pydevd_bundle.x", tmp_path / "ide" / "_pydevd" / "x.py"),
    }
    assert project.module_roots(modules) == [str(tmp_path)]  # the IDE's debuggers are not
