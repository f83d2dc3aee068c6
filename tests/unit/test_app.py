from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from werkzeug.test import Client

from devserve import app, http
from devserve.config import Settings
from devserve.errors import AppLoadError, ConfigError
from tests.unit.conftest import WriteAddon

EXAMPLE_ADDONS = Path(__file__).resolve().parents[2] / "examples" / "addons"

WSGI_MODULE = """
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello from " + __name__.encode()]

def create_app(*args):
    def configured(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [repr(args).encode()]
    configured.args = args
    return configured

def make_number():
    return 42

def explode():
    raise RuntimeError("factory exploded")

NOT_CALLABLE = "a string"
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """tmp_path as the current directory; sys.path and sys.modules are restored after."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    modules = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - modules:
        if name.startswith(MODULE_PREFIX):
            del sys.modules[name]


MODULE_PREFIX = "devserve_test_app_"


@pytest.fixture
def write_module(project: Path, unique: Callable[[str], str]) -> Callable[[str], str]:
    """Write a module into the project folder; returns its (unique) name."""

    def write(source: str) -> str:
        name = unique(MODULE_PREFIX.rstrip("_"))
        (project / f"{name}.py").write_text(textwrap.dedent(source), encoding="utf-8")
        importlib.invalidate_caches()
        return name

    return write


def body(wsgi_app: object) -> str:
    return Client(wsgi_app).get("/").text  # type: ignore[arg-type]


def test_import_module_attribute(write_module: Callable[[str], str], project: Path) -> None:
    name = write_module(WSGI_MODULE)
    loaded = app.import_app(f"{name}:app")
    assert loaded is sys.modules[name].app
    assert body(loaded) == f"hello from {name}"
    assert str(project) in sys.path  # imported with the current directory on sys.path


def test_import_factory_call(write_module: Callable[[str], str]) -> None:
    name = write_module(WSGI_MODULE)
    loaded = app.import_app(f"{name}:create_app()")
    assert loaded.args == ()  # type: ignore[attr-defined]
    assert body(loaded) == "()"


@pytest.mark.parametrize(
    ("call", "args"),
    [
        ("create_app('x', 2)", ("x", 2)),
        ("create_app( 'x' , 2 )", ("x", 2)),
        ("create_app([1, 2], {'k': None}, -1.5, True)", ([1, 2], {"k": None}, -1.5, True)),
    ],
)
def test_import_factory_call_with_literal_arguments(
    write_module: Callable[[str], str], call: str, args: tuple[object, ...]
) -> None:
    name = write_module(WSGI_MODULE)
    loaded = app.import_app(f"{name}:{call}")
    assert loaded.args == args  # type: ignore[attr-defined]


def test_import_module_in_a_package(project: Path, unique: Callable[[str], str]) -> None:
    package = unique(MODULE_PREFIX + "pkg")
    (project / package).mkdir()
    (project / package / "__init__.py").write_text("")
    (project / package / "wsgi.py").write_text(textwrap.dedent(WSGI_MODULE))
    importlib.invalidate_caches()
    assert body(app.import_app(f"{package}.wsgi:app")) == f"hello from {package}.wsgi"


@pytest.mark.parametrize("suffix", ["", ".sub"])
def test_missing_module_names_it(project: Path, unique: Callable[[str], str], suffix: str) -> None:
    missing = unique(MODULE_PREFIX + "missing")
    with pytest.raises(AppLoadError) as caught:
        app.import_app(f"{missing}{suffix}:app")
    message = str(caught.value)
    assert f"cannot import '{missing}{suffix}': no module named '{missing}'" in message
    assert str(project) in message


def test_missing_module_inside_existing_package(
    project: Path, unique: Callable[[str], str]
) -> None:
    package = unique(MODULE_PREFIX + "pkg")
    (project / package).mkdir()
    (project / package / "__init__.py").write_text("")
    importlib.invalidate_caches()
    with pytest.raises(AppLoadError, match=f"no module named '{package}.nope'"):
        app.import_app(f"{package}.nope:app")


def test_missing_dependency_of_the_module_is_reported_as_its_failure(
    write_module: Callable[[str], str],
) -> None:
    name = write_module("import devserve_no_such_dependency\n")
    with pytest.raises(AppLoadError) as caught:
        app.import_app(f"{name}:app")
    message = str(caught.value)
    assert message.startswith(f"importing {name!r} failed: ModuleNotFoundError:")
    assert "devserve_no_such_dependency" in message
    assert f"{name}.py, line 1)" in message


def test_module_raising_at_import_names_error_file_and_line(
    write_module: Callable[[str], str], project: Path
) -> None:
    name = write_module("import os\n\nvalue = undefined_name\n")
    with pytest.raises(AppLoadError) as caught:
        app.import_app(f"{name}:app")
    message = str(caught.value)
    assert "NameError" in message
    assert "undefined_name" in message
    assert f"({project / (name + '.py')}, line 3)" in message
    assert isinstance(caught.value.__cause__, NameError)


def test_module_with_syntax_error_names_file_and_line(
    write_module: Callable[[str], str], project: Path
) -> None:
    name = write_module("x = 1\ny = (\n")
    with pytest.raises(AppLoadError) as caught:
        app.import_app(f"{name}:app")
    message = str(caught.value)
    assert "SyntaxError" in message
    assert f"({project / (name + '.py')}, line 2)" in message


def test_missing_attribute(write_module: Callable[[str], str]) -> None:
    name = write_module(WSGI_MODULE)
    with pytest.raises(AppLoadError, match=f"module '{name}' has no attribute 'application'"):
        app.import_app(f"{name}:application")


@pytest.mark.parametrize(
    ("expression", "kind"), [("NOT_CALLABLE", "str"), ("make_number()", "int")]
)
def test_not_callable(write_module: Callable[[str], str], expression: str, kind: str) -> None:
    name = write_module(WSGI_MODULE)
    with pytest.raises(AppLoadError, match=rf"is a {kind}, not a WSGI callable"):
        app.import_app(f"{name}:{expression}")


def test_factory_that_raises(write_module: Callable[[str], str]) -> None:
    name = write_module(WSGI_MODULE)
    with pytest.raises(AppLoadError) as caught:
        app.import_app(f"{name}:explode()")
    message = str(caught.value)
    assert message.startswith(f"calling '{name}:explode()' failed: RuntimeError: factory exploded")
    assert f"{name}.py, line " in message


@pytest.mark.parametrize(
    "spec",
    [
        "no_colon_here",
        "module:",
        ":app",
        "module:create_app(",
        "module:app.attribute",
        "module:create_app(name)",
        "module:create_app(debug=True)",
        "module:1",
        "module:app[0]",
    ],
)
def test_bad_spec_is_a_config_error(project: Path, spec: str) -> None:
    with pytest.raises(ConfigError, match=r"is not module:attribute or module:factory\(\)"):
        app.import_app(spec)


def test_load_app_with_nothing_to_serve() -> None:
    with pytest.raises(ConfigError, match="nothing to serve: give an addons folder"):
        app.load_app(Settings())


def test_load_app_serves_addons(
    tmp_path: Path, write_addon: WriteAddon, unique: Callable[[str], str]
) -> None:
    name = unique("pages")
    write_addon(
        tmp_path,
        name,
        code="""
        from devserve.http import Controller, route

        class Page(Controller):
            @route("/page")
            def page(self):
                return "page"
        """,
    )
    settings = Settings(addons_path=(str(tmp_path),))
    root = app.load_app(settings)
    assert isinstance(root, http.Root)
    assert list(root.addons) == [name]
    assert Client(root).get("/page").text == "page"
    assert app.describe_target(settings) == f"addons in {tmp_path}"


def test_load_app_prefers_the_app(write_module: Callable[[str], str]) -> None:
    name = write_module(WSGI_MODULE)
    settings = Settings(app=f"{name}:app", addons_path=(str(EXAMPLE_ADDONS),))
    loaded = app.load_app(settings)
    assert loaded is sys.modules[name].app
    assert "devserve_addons.hello" not in sys.modules
    assert app.describe_target(settings) == f"{name}:app"


def test_load_app_example_addons() -> None:
    root = app.load_app(Settings(addons_path=(str(EXAMPLE_ADDONS),)))
    client = Client(root)
    response = client.get("/hello/repeat/2")
    assert response.text == "hello\nhello\n"
