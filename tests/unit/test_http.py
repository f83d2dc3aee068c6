from __future__ import annotations

import io
import json
import os
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from werkzeug.exceptions import NotFound
from werkzeug.test import Client, EnvironBuilder
from werkzeug.wrappers import Request as HTTPRequest

from devserve import addons, http
from devserve.http import Controller, Response, request, route
from tests.unit.conftest import WriteAddon

IMPORTS = "from devserve.http import Controller, Response, request, route\n"
SECRET = "top secret: outside of static/"


class BufferedClient(Client):
    """Reads and closes every response, as a WSGI server does (static files are open files)."""

    def open(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("buffered", True)
        return super().open(*args, **kwargs)


@dataclass
class Site:
    """An addons folder in tmp_path, served by http.Root."""

    root: Path
    write_addon: WriteAddon
    unique: Callable[[str], str]

    def addon(
        self,
        code: str = "",
        *,
        prefix: str = "web",
        depends: tuple[str, ...] = (),
        files: dict[str, str] | None = None,
    ) -> str:
        name = self.unique(prefix)
        code = IMPORTS + textwrap.dedent(code)
        self.write_addon(self.root, name, code=code, depends=depends, files=files)
        return name

    def app(self) -> http.Root:
        found = addons.discover([str(self.root)])
        addons.import_addons(found, [str(self.root)])
        return http.Root(found)

    def client(self) -> Client:
        return BufferedClient(self.app())


@pytest.fixture
def site(tmp_path: Path, write_addon: WriteAddon, unique: Callable[[str], str]) -> Site:
    return Site(tmp_path / "addons", write_addon, unique)


ROUTES = """
class Routes(Controller):
    @route("/double/<int:n>")
    def double(self, n):
        return str(n * 2)

    @route("/only-post", methods=["post"])
    def only_post(self):
        return "posted"

    @route(["/first", "/second/<word>"], methods=["GET"])
    def several(self, word="none"):
        return f"word={word}"
"""


def test_route_with_int_converter(site: Site) -> None:
    site.addon(ROUTES)
    client = site.client()
    response = client.get("/double/21")
    assert response.status_code == 200
    assert response.text == "42"
    assert response.mimetype == "text/html"
    assert client.get("/double/twenty").status_code == 404


def test_methods_are_restricted(site: Site) -> None:
    site.addon(ROUTES)
    client = site.client()
    refused = client.get("/only-post")
    assert refused.status_code == 405
    assert "POST" in refused.headers["Allow"]
    assert "GET" not in refused.headers["Allow"]
    assert client.post("/only-post").text == "posted"
    assert client.post("/first").status_code == 405


def test_route_without_methods_accepts_any(site: Site) -> None:
    site.addon(ROUTES)
    client = site.client()
    for method in ("GET", "POST", "PUT", "DELETE"):
        assert client.open("/double/1", method=method).text == "2", method


def test_get_route_answers_head(site: Site) -> None:
    site.addon(ROUTES)
    response = site.client().head("/second/x")
    assert response.status_code == 200
    assert response.data == b""


def test_one_method_several_paths(site: Site) -> None:
    site.addon(ROUTES)
    client = site.client()
    assert client.get("/first").text == "word=none"
    assert client.get("/second/bird").text == "word=bird"


@pytest.mark.parametrize("path", ["/", "/nope", "/double", "/double/1/2", "/static/x.css"])
def test_unknown_path_is_404(site: Site, path: str) -> None:
    site.addon(ROUTES)
    assert site.client().get(path).status_code == 404


@pytest.mark.parametrize(
    ("expression", "status", "body", "mimetype"),
    [
        ("'<p>text</p>'", 200, b"<p>text</p>", "text/html"),
        ("'caf\\u00e9'", 200, "café".encode(), "text/html"),
        ("b'\\x00raw'", 200, b"\x00raw", "text/html"),
        ("Response('made', status=201, mimetype='text/plain')", 201, b"made", "text/plain"),
        ("None", 204, b"", None),
    ],
)
def test_return_values(
    site: Site, expression: str, status: int, body: bytes, mimetype: str | None
) -> None:
    site.addon(
        f"""
        class Values(Controller):
            @route("/value")
            def value(self):
                return {expression}
        """
    )
    response = site.client().get("/value")
    assert response.status_code == status
    assert response.data == body
    if mimetype is not None:
        assert response.mimetype == mimetype


@pytest.mark.parametrize(("expression", "kind"), [("42", "int"), ("{'a': 1}", "dict")])
def test_bad_return_type_is_a_type_error(site: Site, expression: str, kind: str) -> None:
    site.addon(
        f"""
        class Bad(Controller):
            @route("/bad")
            def bad(self):
                return {expression}
        """
    )
    client = site.client()
    message = f"a route returned {kind}; return str, bytes or a Response"
    with pytest.raises(TypeError, match=message):
        client.get("/bad")


def test_http_exception_in_a_route_is_its_response(site: Site) -> None:
    site.addon(
        """
        from werkzeug.exceptions import Forbidden

        class Guarded(Controller):
            @route("/private")
            def private(self):
                raise Forbidden("keep out")
        """
    )
    response = site.client().get("/private")
    assert response.status_code == 403
    assert "keep out" in response.text


def test_request_is_the_request_being_served(site: Site) -> None:
    name = site.addon(
        """
        class Echo(Controller):
            @route("/echo/<word>", methods=["GET", "POST"])
            def echo(self, word):
                http = request.httprequest
                params = sorted(request.params.items())
                return f"{http.method} {http.path} {word} {params} {request.addon}"
        """
    )
    client = site.client()
    assert client.get("/echo/hi?a=1").text == f"GET /echo/hi hi [('a', '1')] {name}"
    posted = client.post("/echo/yo?a=1&b=query", data={"b": "form", "c": "3"})
    assert posted.text == f"POST /echo/yo yo [('a', '1'), ('b', 'form'), ('c', '3')] {name}"


def test_request_outside_a_request_is_a_runtime_error(site: Site) -> None:
    with pytest.raises(RuntimeError, match="only available while serving a request"):
        request.httprequest  # noqa: B018
    site.addon(ROUTES)
    assert site.client().get("/double/1").status_code == 200
    with pytest.raises(RuntimeError, match="only available while serving a request"):
        request.params  # noqa: B018


def test_nested_requests_unwind_to_the_outer_one() -> None:
    outer = http.Request(HTTPRequest(EnvironBuilder(path="/outer").get_environ()), "a")
    inner = http.Request(HTTPRequest(EnvironBuilder(path="/inner").get_environ()), "b")
    with http.bound_request(outer):
        assert request.httprequest.path == "/outer"
        with http.bound_request(inner):
            assert request.httprequest.path == "/inner"
            assert request.addon == "b"
        assert request.httprequest.path == "/outer"
        assert request.addon == "a"
    with pytest.raises(RuntimeError):
        request.addon  # noqa: B018


def test_subclass_controller_replaces_its_parent(site: Site) -> None:
    base = site.addon(
        """
        class Base(Controller):
            @route("/greet")
            def greet(self):
                return "base greet"

            @route("/other")
            def other(self):
                return "base other"

            @route("/shout/<word>")
            def shout(self, word):
                return word.upper()
        """,
        prefix="base",
    )
    child = site.addon(
        f"""
        from devserve_addons.{base} import Base

        class Child(Base):
            def greet(self):  # no @route: keeps the parent's
                return "child greet"

            @route("/shout/<word>")
            def shout(self, word):
                return super().shout(word) + "!"

            @route("/child-only")
            def child_only(self):
                return f"new in {{request.addon}}"
        """,
        prefix="child",
        depends=(base,),
    )
    root = site.app()
    client = BufferedClient(root)
    assert client.get("/greet").text == "child greet"
    assert client.get("/other").text == "base other"
    assert client.get("/shout/hi").text == "HI!"
    assert client.get("/child-only").text == f"new in {child}"
    rules = [rule.rule for rule in root.url_map.iter_rules()]
    assert rules.count("/greet") == 1
    assert rules.count("/shout/<word>") == 1


def test_subclass_in_an_addon_not_served_does_not_hide_the_parent(
    site: Site, tmp_path: Path, write_addon: WriteAddon, unique: Callable[[str], str]
) -> None:
    base = site.addon(
        """
        class Base(Controller):
            @route("/greet")
            def greet(self):
                return "base greet"
        """,
        prefix="base",
    )
    other_root = tmp_path / "elsewhere"
    child = unique("child")
    write_addon(
        other_root,
        child,
        depends=[base],
        code=f"""
        from devserve_addons.{base} import Base

        class Child(Base):
            def greet(self):
                return "child greet"
        """,
    )
    paths = [str(site.root), str(other_root)]
    found = addons.discover(paths)
    addons.import_addons(found, paths)
    served = [addon for addon in found if addon.name == base]
    assert BufferedClient(http.Root(found)).get("/greet").text == "child greet"
    assert BufferedClient(http.Root(served)).get("/greet").text == "base greet"


def test_controllers_outside_addons_are_not_served(site: Site) -> None:
    class Stray(Controller):
        @route("/stray")
        def stray(self) -> str:
            return "stray"

    site.addon(ROUTES)
    client = site.client()
    assert client.get("/stray").status_code == 404
    assert client.get("/double/2").text == "4"


def test_unknown_route_type_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"unknown route type 'nope' \(known: http, json\)"):
        route("/x", type="nope")


def test_route_records_upper_case_methods_and_paths() -> None:
    @route(["/a", "/b"], methods=["get", "Post"])
    def endpoint() -> None:
        return None

    assert endpoint.routing == http.Routing(("/a", "/b"), ("GET", "POST"), "http")  # type: ignore[attr-defined]


def test_new_route_types_plug_into_route_types(site: Site, monkeypatch: pytest.MonkeyPatch) -> None:
    def dispatch_json(endpoint: Callable[..., Any], arguments: Mapping[str, Any]) -> Response:
        return Response(json.dumps(endpoint(**arguments)), mimetype="application/json")

    monkeypatch.setitem(http.ROUTE_TYPES, "json", dispatch_json)
    site.addon(
        """
        class Api(Controller):
            @route("/api/<int:n>", type="json")
            def api(self, n):
                return {"n": n, "path": request.httprequest.path}
        """
    )
    response = site.client().get("/api/5")
    assert response.mimetype == "application/json"
    assert response.json == {"n": 5, "path": "/api/5"}


@pytest.mark.parametrize(
    ("result", "status", "body"),
    [("text", 200, b"text"), (b"bytes", 200, b"bytes"), (None, 204, b"")],
)
def test_make_response(result: Any, status: int, body: bytes) -> None:
    response = http.make_response(result)
    assert response.status_code == status
    assert response.get_data() == body


def test_make_response_passes_responses_through() -> None:
    original = Response("x", status=418)
    assert http.make_response(original) is original


# --- static files ---


@pytest.fixture
def static_site(site: Site, tmp_path: Path) -> tuple[Site, str]:
    """An addon with static files, a secret next to its static/ folder and one outside the
    addons path, and symlinks in static/ leading to both."""
    name = site.addon(
        files={
            "static/app.css": "body { color: red }\n",
            "static/sub/page.txt": "in a sub-folder\n",
            "secret.txt": SECRET,
        }
    )
    (tmp_path / "secret.txt").write_text(SECRET)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_text(SECRET)
    static = site.root / name / "static"
    os.symlink(tmp_path / "secret.txt", static / "link.txt")
    os.symlink(tmp_path / "outside", static / "linkdir")
    os.symlink(static / "app.css", static / "alias.css")  # stays inside: allowed
    return site, name


def test_static_file_is_served_with_nosniff_and_etag(static_site: tuple[Site, str]) -> None:
    site, name = static_site
    response = site.client().get(f"/{name}/static/app.css")
    assert response.status_code == 200
    assert response.text == "body { color: red }\n"
    assert response.mimetype == "text/css"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["ETag"].startswith('"')


def test_static_file_in_a_sub_folder_and_symlink_inside(static_site: tuple[Site, str]) -> None:
    site, name = static_site
    client = site.client()
    assert client.get(f"/{name}/static/sub/page.txt").text == "in a sub-folder\n"
    assert client.get(f"/{name}/static/alias.css").text == "body { color: red }\n"


def test_static_revalidation_with_etag_is_304(static_site: tuple[Site, str]) -> None:
    site, name = static_site
    client = site.client()
    etag = client.get(f"/{name}/static/app.css").headers["ETag"]
    fresh = client.get(f"/{name}/static/app.css", headers={"If-None-Match": etag})
    assert fresh.status_code == 304
    assert fresh.data == b""
    stale = client.get(f"/{name}/static/app.css", headers={"If-None-Match": '"other"'})
    assert stale.status_code == 200
    assert stale.text == "body { color: red }\n"


def test_static_head_and_methods(static_site: tuple[Site, str]) -> None:
    site, name = static_site
    client = site.client()
    head = client.head(f"/{name}/static/app.css")
    assert head.status_code == 200
    assert head.data == b""
    assert client.post(f"/{name}/static/app.css").status_code == 405


@pytest.mark.parametrize(
    "path",
    [
        "../secret.txt",
        "%2e%2e/secret.txt",
        "%2E%2E/secret.txt",
        "..%2fsecret.txt",
        "%2e%2e%2fsecret.txt",
        "sub/../../secret.txt",
        "sub/%2e%2e/%2e%2e/secret.txt",
        "../../../secret.txt",
        "%2e%2e%2f%2e%2e%2f%2e%2e%2fsecret.txt",
        "link.txt",
        "linkdir/secret.txt",
        "missing.css",
        "a%00b.css",
    ],
)
def test_static_never_serves_outside_files(static_site: tuple[Site, str], path: str) -> None:
    site, name = static_site
    response = site.client().get(f"/{name}/static/{path}", follow_redirects=True)
    assert response.status_code == 404
    assert SECRET not in response.text


@pytest.mark.parametrize("encoded", [False, True])
def test_static_never_serves_an_absolute_path(
    static_site: tuple[Site, str], tmp_path: Path, encoded: bool
) -> None:
    site, name = static_site
    secret = str(tmp_path / "secret.txt")
    path = quote(secret, safe="") if encoded else secret
    response = site.client().get(f"/{name}/static/{path}", follow_redirects=True)
    assert response.status_code == 404
    assert SECRET not in response.text


@pytest.mark.parametrize(
    "filename",
    [
        "../secret.txt",
        "sub/../../secret.txt",
        "../../../secret.txt",
        "link.txt",
        "linkdir/secret.txt",
        "a\0b",
        "ABSOLUTE",
    ],
)
def test_serve_static_confines_to_the_static_folder(
    static_site: tuple[Site, str], tmp_path: Path, filename: str
) -> None:
    """The check itself, below the URL routing: whatever filename reaches it."""
    site, name = static_site
    if filename == "ABSOLUTE":
        filename = str(tmp_path / "secret.txt")
    environ = EnvironBuilder(path="/").get_environ()
    with pytest.raises(NotFound):
        site.app().serve_static(environ, name, filename)


def test_static_for_unknown_addon_is_404(static_site: tuple[Site, str]) -> None:
    site, name = static_site
    client = site.client()
    assert client.get("/nosuchaddon/static/app.css").status_code == 404
    assert client.get(f"/{name}x/static/app.css").status_code == 404


def test_addon_without_static_folder_serves_nothing(site: Site) -> None:
    name = site.addon(files={"data.txt": "not static"})
    client = site.client()
    assert client.get(f"/{name}/static/data.txt").status_code == 404
    assert client.get(f"/{name}/static/../data.txt").status_code == 404


# --- http route parameters ---

PARAMS = """
import json

class Params(Controller):
    @route("/search", methods=["GET", "POST"])
    def search(self, q, page="1"):
        return Response(f"q={q} page={page}", mimetype="text/plain")

    @route("/all", methods=["GET", "POST"])
    def everything(self, **kwargs):
        shown = {k: getattr(v, "filename", v) for k, v in kwargs.items()}
        return Response(json.dumps(shown, sort_keys=True), mimetype="application/json")

    @route("/item/<name>")
    def item(self, name, size="m"):
        return f"name={name} size={size}"

    @route("/plain")
    def plain(self):
        return f"params={sorted(request.params)}"

    @route("/inner")
    def inner(self, word="x"):
        return str(len(word, 2))
"""


def test_http_route_gets_the_parameters_it_names(site: Site) -> None:
    site.addon(PARAMS)
    client = site.client()
    assert client.get("/search?q=tea&page=2").text == "q=tea page=2"
    assert client.get("/search?q=tea&utm_source=mail").text == "q=tea page=1"
    assert client.post("/search?page=3", data={"q": "form"}).text == "q=form page=3"
    assert client.post("/search?q=query", data={"q": "form"}).text == "q=form page=1"
    # Not passed, still readable:
    assert client.get("/plain?utm_source=mail").text == "params=['utm_source']"


def test_http_route_with_kwargs_gets_every_parameter_and_uploads(site: Site) -> None:
    site.addon(PARAMS)
    client = site.client()
    assert client.get("/all?a=1&b=2").json == {"a": "1", "b": "2"}
    upload = {"note": "hi", "file": (io.BytesIO(b"data"), "notes.txt")}
    response = client.post("/all", data=upload, content_type="multipart/form-data")
    assert response.json == {"file": "notes.txt", "note": "hi"}


def test_url_arguments_win_over_parameters(site: Site) -> None:
    site.addon(PARAMS)
    assert site.client().get("/item/cup?name=plate&size=xl").text == "name=cup size=xl"


def test_a_missing_parameter_is_400_naming_it(site: Site) -> None:
    site.addon(PARAMS)
    response = site.client().get("/search?page=2")
    assert response.status_code == 400
    assert "missing a required argument: &#39;q&#39;" in response.text


def test_a_type_error_inside_an_http_route_is_not_a_400(site: Site) -> None:
    site.addon(PARAMS)
    with pytest.raises(TypeError, match="len"):
        site.client().get("/inner")


# --- json routes ---

JSON_ROUTES = """
class Api(Controller):
    @route("/add", type="json")
    def add(self, a, b=0):
        return a + b

    @route("/item/<int:item>", type="json")
    def item(self, item, quantity=1):
        return [item, quantity, request.params]

    @route("/boom", type="json")
    def boom(self):
        raise ValueError("boom")
"""


def rpc_body(params: Any = None, number: Any = 1) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": "call", "params": params or {}}
    if number is not None:
        body["id"] = number
    return body


def test_json_route(site: Site) -> None:
    site.addon(JSON_ROUTES)
    client = site.client()
    response = client.post("/add", json=rpc_body({"a": 2, "b": 5}))
    assert response.json == {"jsonrpc": "2.0", "id": 1, "result": 7}
    bad = client.post("/add", json=rpc_body({"c": 1})).json["error"]
    assert bad["code"] == -32602
    positional = client.post("/add", json=rpc_body([1, 2])).json["error"]
    assert positional == {
        "code": -32602,
        "message": "Invalid params: a json route takes named params",
    }
    assert client.post("/add", data="{}", content_type="text/plain").status_code == 415


def test_json_route_url_arguments_win_and_request_params_are_the_calls(site: Site) -> None:
    site.addon(JSON_ROUTES)
    batch = [rpc_body({"item": 9, "quantity": 2}), rpc_body({"x": 1}, 2), rpc_body({}, None)]
    answer = site.client().post("/item/5", json=batch).json
    assert answer == [
        {"jsonrpc": "2.0", "id": 1, "result": [5, 2, {"item": 9, "quantity": 2}]},
        {"jsonrpc": "2.0", "id": 2, "error": answer[1]["error"]},
    ]
    assert answer[1]["error"]["code"] == -32602  # x is not a parameter of item()


def test_json_route_errors_show_the_traceback_only_in_dev(site: Site) -> None:
    site.addon(JSON_ROUTES)
    found = addons.discover([str(site.root)])
    addons.import_addons(found, [str(site.root)])
    quiet = BufferedClient(http.Root(found)).post("/boom", json=rpc_body()).json["error"]
    assert quiet == {"code": -32000, "message": "boom"}
    loud = BufferedClient(http.Root(found, dev=True)).post("/boom", json=rpc_body()).json
    assert "Traceback" in loud["error"]["data"]["traceback"]


def test_root_handle_passes_on_unknown_paths_only(site: Site) -> None:
    site.addon(ROUTES)
    root = site.app()
    started: list[str] = []

    def start_response(status: str, headers: Any) -> None:
        started.append(status)

    environ = EnvironBuilder(path="/nope").get_environ()
    assert root.handle(environ, start_response) is None  # type: ignore[arg-type]
    assert started == []
    environ = EnvironBuilder(path="/only-post", method="GET").get_environ()
    assert root.handle(environ, start_response) is not None  # type: ignore[arg-type]
    assert started == ["405 METHOD NOT ALLOWED"]


# --- static: types and revalidation ---


@pytest.mark.parametrize(
    ("filename", "mimetype"),
    [
        ("a.css", "text/css"),
        ("a.js", "text/javascript"),
        ("a.mjs", "text/javascript"),
        ("a.svg", "image/svg+xml"),
        ("a.json", "application/json"),
        ("a.js.map", "application/json"),
        ("a.woff", "font/woff"),
        ("a.woff2", "font/woff2"),
        ("A.WOFF2", "font/woff2"),
        ("a.wasm", "application/wasm"),
        ("a.png", "image/png"),
    ],
)
def test_static_content_types_do_not_depend_on_the_system(
    site: Site, monkeypatch: pytest.MonkeyPatch, filename: str, mimetype: str
) -> None:
    import mimetypes

    # As on a machine without /etc/mime.types: Python's own table lacks woff2, says
    # application/javascript for .js.
    monkeypatch.setattr(mimetypes, "_db", mimetypes.MimeTypes(filenames=()))
    name = site.addon(files={f"static/{filename}": "x"})
    response = site.client().get(f"/{name}/static/{filename}")
    assert response.status_code == 200
    assert response.mimetype == mimetype
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_static_revalidation_with_last_modified_is_304(static_site: tuple[Site, str]) -> None:
    site, name = static_site
    client = site.client()
    first = client.get(f"/{name}/static/app.css")
    last_modified = first.headers["Last-Modified"]
    fresh = client.get(f"/{name}/static/app.css", headers={"If-Modified-Since": last_modified})
    assert fresh.status_code == 304
    assert fresh.data == b""
    assert fresh.headers["X-Content-Type-Options"] == "nosniff"
    old = "Mon, 01 Jan 2001 00:00:00 GMT"
    assert (
        client.get(f"/{name}/static/app.css", headers={"If-Modified-Since": old}).status_code == 200
    )


def test_static_range_request_is_206(static_site: tuple[Site, str]) -> None:
    site, name = static_site
    response = site.client().get(f"/{name}/static/app.css", headers={"Range": "bytes=0-3"})
    assert response.status_code == 206
    assert response.data == b"body"


@pytest.mark.parametrize(
    "path", ["..\\secret.txt", "sub\\..\\..\\secret.txt", "%5c..%5csecret.txt"]
)
def test_static_backslashes_do_not_escape(static_site: tuple[Site, str], path: str) -> None:
    site, name = static_site
    response = site.client().get(f"/{name}/static/{path}")
    assert response.status_code == 404
    assert SECRET not in response.text
