from __future__ import annotations

import importlib
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

import devserve
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


def test_load_app_serves_addons_rpc_then_handlers_then_routes(
    tmp_path: Path, write_addon: WriteAddon, unique: Callable[[str], str]
) -> None:
    name = unique("pages")
    write_addon(
        tmp_path,
        name,
        code="""
        from devserve import register_wsgi_handler
        from devserve.http import Controller, route

        class Page(Controller):
            @route("/page")
            def page(self):
                return "page"

            @route("/taken")
            def taken(self):
                return "route"

        def handler(environ, start_response):
            if environ["PATH_INFO"] not in ("/taken", "/jsonrpc"):
                return None
            start_response("200 OK", [("Content-Type", "text/plain")])
            return [b"handler"]

        register_wsgi_handler(handler)
        """,
    )
    settings = Settings(addons_path=(str(tmp_path),))
    chain = app.load_app(settings)
    assert isinstance(chain, app.HandlerChain)
    root = chain.handlers[-1].__self__  # type: ignore[attr-defined]
    assert isinstance(root, http.Root)
    assert list(root.addons) == [name]
    client = Client(chain)
    assert client.get("/page").text == "page"
    assert client.get("/taken").text == "handler"  # handlers come before the routes
    assert client.get("/jsonrpc").status_code == 405  # the RPC endpoints before the handlers
    missing = client.get("/nothing/here")
    assert (missing.status_code, missing.text) == (404, "No handler found\n")
    assert app.describe_target(settings) == f"addons in {tmp_path}"


def test_load_app_prefers_the_app(write_module: Callable[[str], str]) -> None:
    name = write_module(WSGI_MODULE)
    settings = Settings(app=f"{name}:app", addons_path=(str(EXAMPLE_ADDONS),))
    loaded = app.load_app(settings)
    assert loaded is sys.modules[name].app
    assert "devserve_addons.hello" not in sys.modules
    assert app.describe_target(settings) == f"{name}:app"


def test_load_says_what_it_serves(
    tmp_path: Path,
    write_addon: WriteAddon,
    write_module: Callable[[str], str],
    unique: Callable[[str], str],
) -> None:
    """The addons served, in dependency order (what cron and RPC serve), or the callable
    imported for --app as it is: taken from what was loaded, not from a registry."""
    base, shop = unique("zz_base"), unique("aa_shop")
    write_addon(tmp_path, base)
    write_addon(tmp_path, shop, depends=[base])
    served = app.load(Settings(addons_path=(str(tmp_path),)))
    assert [addon.name for addon in served.addons] == [base, shop]
    assert served.imported is None
    assert Client(served.app).get("/nowhere").text == "No handler found\n"
    again = app.load(Settings(addons_path=(str(EXAMPLE_ADDONS),)))
    assert [addon.name for addon in again.addons] == ["hello"]  # this load's, not the last
    name = write_module(WSGI_MODULE)
    plain = app.load(Settings(app=f"{name}:app", proxy_mode=True))
    assert plain.imported is sys.modules[name].app
    assert plain.app is not plain.imported  # wrapped for --proxy-mode
    assert plain.addons == ()


def test_load_app_example_addons() -> None:
    root = app.load_app(Settings(addons_path=(str(EXAMPLE_ADDONS),)))
    client = Client(root)
    response = client.get("/hello/repeat/2")
    assert response.text == "hello\nhello\n"


# --- the handler chain and --proxy-mode ---


def text_app(text: str) -> Any:
    def answer(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [text.encode()]

    return answer


def handler_for(path: str, text: str, seen: list[str] | None = None) -> Any:
    def handler(environ: Any, start_response: Any) -> list[bytes] | None:
        if seen is not None:
            seen.append(text)
        if environ["PATH_INFO"] != path:
            return None
        return text_app(text)(environ, start_response)  # type: ignore[no-any-return]

    return handler


def test_chain_tries_handlers_in_order_first_answer_wins() -> None:
    seen: list[str] = []
    chain = app.HandlerChain(
        [
            handler_for("/a", "first", seen),
            handler_for("/a", "second", seen),
            handler_for("/b", "third", seen),
        ]
    )
    client = Client(chain)
    assert client.get("/a").text == "first"
    assert seen == ["first"]  # the others were not asked
    assert client.get("/b").text == "third"
    assert seen == ["first", "first", "second", "third"]


def test_chain_without_an_answer_is_404_no_handler_found() -> None:
    response = Client(app.HandlerChain([handler_for("/a", "a")])).get("/other")
    assert response.status_code == 404
    assert response.text == "No handler found\n"
    assert response.headers["Content-Length"] == str(len("No handler found\n"))
    assert Client(app.HandlerChain([])).get("/").status_code == 404


def test_register_wsgi_handler_is_public_and_registers_once() -> None:
    handler = handler_for("/h", "h")
    devserve.register_wsgi_handler(handler)
    devserve.register_wsgi_handler(handler)
    assert app._handlers == [handler]
    assert "register_wsgi_handler" in devserve.__all__


def test_a_plain_app_without_handlers_is_served_as_it_is(
    write_module: Callable[[str], str],
) -> None:
    name = write_module(WSGI_MODULE)
    assert app.load_app(Settings(app=f"{name}:app")) is sys.modules[name].app


def test_handlers_registered_by_a_plain_app_come_first(
    write_module: Callable[[str], str],
) -> None:
    name = write_module(
        WSGI_MODULE
        + textwrap.dedent(
            """
            from devserve import register_wsgi_handler

            def handler(environ, start_response):
                if environ["PATH_INFO"] != "/handled":
                    return None
                start_response("200 OK", [("Content-Type", "text/plain")])
                return [b"by the handler"]

            register_wsgi_handler(handler)
            """
        )
    )
    loaded = app.load_app(Settings(app=f"{name}:app"))
    assert isinstance(loaded, app.HandlerChain)
    client = Client(loaded)
    assert client.get("/handled").text == "by the handler"
    assert client.get("/other").text == f"hello from {name}"


def whoami(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    facts = (environ["REMOTE_ADDR"], environ["wsgi.url_scheme"], environ.get("HTTP_HOST"))
    return [" ".join(map(str, facts)).encode()]


FORWARDED = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}


@pytest.mark.parametrize(
    ("proxy_mode", "headers", "expected"),
    [
        (False, {**FORWARDED, "X-Forwarded-Host": "example.com"}, "127.0.0.1 http localhost"),
        (True, {**FORWARDED, "X-Forwarded-Host": "example.com"}, "203.0.113.7 https example.com"),
        (True, FORWARDED, "127.0.0.1 http localhost"),  # no X-Forwarded-Host: nothing trusted
        (True, {}, "127.0.0.1 http localhost"),
    ],
)
def test_proxy_mode(proxy_mode: bool, headers: dict[str, str], expected: str) -> None:
    served = app.wrap_app(whoami, Settings(proxy_mode=proxy_mode))
    assert isinstance(served, app.ProxyMode) is proxy_mode
    environ = {"REMOTE_ADDR": "127.0.0.1"}
    assert Client(served).get("/", headers=headers, environ_base=environ).text == expected


def test_proxy_mode_wraps_addons_and_plain_apps(write_module: Callable[[str], str]) -> None:
    name = write_module(WSGI_MODULE)
    plain = app.load_app(Settings(app=f"{name}:app", proxy_mode=True))
    assert isinstance(plain, app.ProxyMode)
    assert plain.app is sys.modules[name].app
    addons_app = app.load_app(Settings(addons_path=(str(EXAMPLE_ADDONS),), proxy_mode=True))
    assert isinstance(addons_app, app.ProxyMode)
    assert isinstance(addons_app.app, app.HandlerChain)


# --- broken code ---


def raise_chain(tmp_path: Path) -> BaseException:
    """RuntimeError from a SyntaxError in broken.py (a file no frame runs), itself caused
    by a ValueError raised in helper.py through a module whose file does not exist."""
    helper = tmp_path / "helper.py"
    helper.write_text("def boom(inner):\n    inner()\n", encoding="utf-8")
    broken = tmp_path / "broken.py"
    broken.write_text("x = (\n", encoding="utf-8")
    namespace: dict[str, object] = {}
    exec(compile(helper.read_text(encoding="utf-8"), str(helper), "exec"), namespace)
    ghost = str(tmp_path / "ghost.py")  # never written
    exec(compile("def inner():\n    raise ValueError('bad value')\n", ghost, "exec"), namespace)
    try:
        try:
            namespace["boom"](namespace["inner"])  # type: ignore[operator]
        except ValueError as first:
            try:
                compile(broken.read_text(encoding="utf-8"), str(broken), "exec")
            except SyntaxError as syntax:
                raise syntax from first
    except SyntaxError as syntax:
        try:
            raise RuntimeError("app failed") from syntax
        except RuntimeError as error:
            return error
    raise AssertionError("nothing raised")


def test_traceback_files(tmp_path: Path) -> None:
    error = raise_chain(tmp_path)
    assert app.traceback_files(error) == sorted(
        [str(tmp_path / "broken.py"), str(tmp_path / "helper.py"), __file__]
    )


def test_traceback_files_of_a_syntax_error_without_traceback(tmp_path: Path) -> None:
    source = tmp_path / "typo.py"
    source.write_text("def f(:\n", encoding="utf-8")
    error = SyntaxError("invalid syntax", (str(source), 1, 7, "def f(:\n"))
    assert app.traceback_files(error) == [str(source)]
    missing = SyntaxError("invalid syntax", (str(tmp_path / "gone.py"), 1, 1, "x"))
    assert app.traceback_files(missing) == []


def failing_app(message: str) -> BaseException:
    try:
        try:
            raise ValueError(message)
        except ValueError as cause:
            raise RuntimeError(f"importing 'shop' failed: {message}") from cause
    except RuntimeError as error:
        return error


def test_error_app_plain_text_by_default() -> None:
    error = failing_app("price must be positive")
    response = Client(app.error_app(error)).get("/any/path")
    assert response.status_code == 500
    assert response.headers["Content-Type"] == "text/plain; charset=utf-8"
    text = response.text
    assert text.startswith("importing 'shop' failed: price must be positive\n\nTraceback")
    assert "ValueError: price must be positive" in text
    assert "failing_app" in text  # the frame that raised the cause
    assert text.endswith("devserve reloads when a watched file changes.\n")


def test_error_app_html_for_browsers() -> None:
    error = failing_app("price must be positive")
    accept = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"
    response = Client(app.error_app(error)).post("/", headers={"Accept": accept})
    assert response.status_code == 500
    assert response.headers["Content-Type"] == "text/html; charset=utf-8"
    page = response.text
    assert page.startswith("<!doctype html>")
    assert "<p>importing &#x27;shop&#x27; failed: price must be positive</p>" in page
    assert "ValueError: price must be positive" in page


def test_error_app_escapes_html() -> None:
    error = failing_app("<script>alert('x')</script>")
    response = Client(app.error_app(error)).get("/", headers={"Accept": "text/html"})
    page = response.text
    assert "<script>" not in page
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    # once in the summary, once in the traceback's last line
    assert page.count("&lt;script&gt;") == 2


@pytest.mark.parametrize("accept", ["", "text/html"])
def test_error_app_content_length_counts_bytes(accept: str) -> None:
    error = failing_app("prix en € pour le café")
    response = Client(app.error_app(error)).get("/", headers={"Accept": accept})
    assert "prix en € pour le café" in response.text
    assert int(response.headers["Content-Length"]) == len(response.data)
    assert len(response.data) > len(response.text)  # multi-byte characters


def test_error_app_without_cause_shows_the_error_itself() -> None:
    try:
        raise ImportError("no module named 'shop'")
    except ImportError as error:
        page = app.error_app(error)
    text = Client(page).get("/").text
    assert text.startswith("no module named 'shop'\n\nTraceback")
    assert "ImportError: no module named 'shop'" in text
    assert __file__ in text
