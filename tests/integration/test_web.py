"""The web layer through the real CLI, with real clients: json routes (JSON-RPC 2.0 over
http.client), http route parameters, the WSGI handler chain, --proxy-mode, static files and
their revalidation and confinement, and RPC (xmlrpc.client.ServerProxy, plain JSON).

The fixture addons are ``apps/webaddons`` (``webtest``: routes, the ``inventory`` service,
two WSGI handlers; ``webother``: a second addon with a service), copied to a temporary folder
where symlinks are added. Most tests share one server per flag set (module fixtures).
"""

from __future__ import annotations

import json
import os
import shutil
import time
import xmlrpc.client
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import StartDevserve
from tests.integration.harness import (
    APPS,
    EXAMPLE_ADDONS,
    DevserveProcess,
    Response,
    start_in,
)
from tests.payloads import BILLION_LAUGHS, EXTERNAL_ENTITY

SECRET = "secret outside of static/"


def copy_addons(folder: Path) -> Path:
    """The fixture addons in ``folder``, with a secret next to static/ and one outside the
    addons path, symlinks in static/ leading to both, and one that stays inside."""
    addons = folder / "addons"
    shutil.copytree(APPS / "webaddons", addons, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "secret.txt").write_text(SECRET)
    (addons / "webtest" / "secret.txt").write_text(SECRET)
    static = addons / "webtest" / "static"
    os.symlink(folder / "secret.txt", static / "link-out.txt")
    os.symlink(folder, static / "dir-out")
    os.symlink(static / "app.css", static / "alias.css")
    return addons


def start_web(folder: Path, *args: str) -> DevserveProcess:
    return start_in(folder, ["-p", "0", *args, str(copy_addons(folder))], cwd=folder)


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevserveProcess]:
    process = start_web(tmp_path_factory.mktemp("web"))
    yield process
    process.stop()


@pytest.fixture(scope="module")
def web_dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevserveProcess]:
    process = start_web(tmp_path_factory.mktemp("web-dev"), "--dev", "reload")
    yield process
    process.stop()


# --- clients ---


def post_json(server: DevserveProcess, path: str, body: Any, **headers: str) -> Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **headers}
    return server.request(path, "POST", data, headers)


def call(params: Any = None, number: Any = 1, method: Any = "call") -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        body["params"] = params
    if number is not None:
        body["id"] = number
    return body


def rpc_answer(server: DevserveProcess, path: str, body: Any) -> Any:
    response = post_json(server, path, body)
    assert response.status == 200, response.text
    assert response.headers["Content-Type"] == "application/json"
    return json.loads(response.body)


class _Transport(xmlrpc.client.Transport):
    """A bounded wait (a test must fail, not hang, if the server does not answer), and a
    connection closed after each call (none left open when the test ends)."""

    def make_connection(self, host: Any) -> Any:
        connection = super().make_connection(host)
        connection.timeout = 10
        return connection

    def single_request(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().single_request(*args, **kwargs)
        finally:
            self.close()


def proxy(server: DevserveProcess, path: str) -> xmlrpc.client.ServerProxy:
    return xmlrpc.client.ServerProxy(server.url + path, transport=_Transport(), allow_none=True)


def fault_of(method: Any, *args: Any) -> xmlrpc.client.Fault:
    with pytest.raises(xmlrpc.client.Fault) as raised:
        method(*args)
    return raised.value


# --- json routes ---


def test_json_route_results_and_errors(web: DevserveProcess) -> None:
    assert rpc_answer(web, "/webtest/add", call({"a": 2, "b": 3})) == {
        "jsonrpc": "2.0",
        "id": 1,
        "result": 5,
    }
    item = rpc_answer(web, "/webtest/items/5", call({"item": 9, "quantity": 3}, "x"))
    assert item == {"jsonrpc": "2.0", "id": "x", "result": {"item": 5, "quantity": 3}}

    invalid = rpc_answer(web, "/webtest/add", call({"b": 1}))["error"]
    assert invalid == {
        "code": -32602,
        "message": "Invalid params: missing a required argument: 'a'",
    }
    inner = rpc_answer(web, "/webtest/inner-type-error", call({"word": "x"}))["error"]
    assert inner["code"] == -32000  # a TypeError raised inside is not "invalid params"
    assert "len" in inner["message"]
    failed = rpc_answer(web, "/webtest/fail", call())["error"]
    assert failed == {"code": -32000, "message": "no such thing"}  # no traceback without --dev
    web.wait_for_log(r"JSON-RPC call to /webtest/fail failed\nTraceback")
    assert rpc_answer(web, "/webtest/nan", call())["error"]["code"] == -32000

    parse = rpc_answer(web, "/webtest/add", b'{"jsonrpc": "2.0", "id": 1')
    assert (parse["id"], parse["error"]["code"]) == (None, -32700)
    for bad in (call({"a": 1}, method=5), {**call({"a": 1}), "jsonrpc": "1.0"}, [], "text"):
        assert rpc_answer(web, "/webtest/add", bad)["error"]["code"] == -32600, bad
    positional = rpc_answer(web, "/webtest/add", call([1, 2]))["error"]
    assert positional["code"] == -32602

    form = web.request("/webtest/add", "POST", b'{"a": 1}', {"Content-Type": "text/plain"})
    assert form.status == 415


def test_json_route_batch_and_notifications(web: DevserveProcess) -> None:
    batch = [
        call({"x": 1}, 1),
        call({"y": 2}, None),  # a notification: runs, no entry
        {"nonsense": True},
        call([1], 3),
        call({"z": 3}, 4),
    ]
    answer = rpc_answer(web, "/webtest/params", batch)
    assert [entry["id"] for entry in answer] == [1, None, 3, 4]
    first, invalid, positional, last = answer
    # Each call of the batch is a request of its own: request.params is that call's.
    assert first["result"] == {"kwargs": {"x": 1}, "request": {"x": 1}, "addon": "webtest"}
    assert last["result"] == {"kwargs": {"z": 3}, "request": {"z": 3}, "addon": "webtest"}
    assert invalid["error"]["code"] == -32600
    assert positional["error"]["code"] == -32602

    only_notifications = post_json(web, "/webtest/params", [call({}, None), call({}, None)])
    assert (only_notifications.status, only_notifications.body) == (204, b"")
    assert post_json(web, "/webtest/add", call({"a": 1}, None)).status == 204


def test_json_route_errors_carry_the_traceback_with_dev(web_dev: DevserveProcess) -> None:
    error = rpc_answer(web_dev, "/webtest/fail", call())["error"]
    assert error["code"] == -32000
    assert error["message"] == "no such thing"
    assert error["data"]["name"] == "builtins.ValueError"
    assert error["data"]["traceback"].startswith("Traceback (most recent call last)")
    assert 'raise ValueError("no such thing")' in error["data"]["traceback"]


# --- http route parameters ---


def test_http_route_parameters(web: DevserveProcess) -> None:
    assert web.request("/webtest/search?q=tea&page=2").text == "q=tea page=2"
    unknown = web.request("/webtest/search?q=tea&utm_source=mail&fbclid=x")
    assert (unknown.status, unknown.text) == (200, "q=tea page=1")
    form = web.request(
        "/webtest/search?page=4",
        "POST",
        b"q=posted",
        {"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.text == "q=posted page=4"
    everything = web.request("/webtest/anything?a=1&utm_source=mail")
    assert json.loads(everything.body) == {"a": "1", "utm_source": "mail"}
    assert web.request("/webtest/page/cup?name=plate&size=xl").text == "name=cup size=xl"
    missing = web.request("/webtest/search?page=2")
    assert missing.status == 400
    assert "missing a required argument" in missing.text


# --- the handler chain ---


def test_handler_chain_of_an_addons_app(web: DevserveProcess) -> None:
    assert web.request("/chain/first").text == "first handler"
    assert web.request("/chain/second").text == "second handler"
    assert web.request("/chain/both").text == "first handler"  # registered first, asked first
    assert web.request("/chain/shadowed").text == "first handler"  # handlers before routes
    assert rpc_answer(web, "/webtest/add", call({"a": 1}))["result"] == 1  # routes still answer
    nobody = web.request("/no/such/page")
    assert (nobody.status, nobody.text) == (404, "No handler found\n")


def test_handler_chain_of_a_plain_app(devserve: StartDevserve) -> None:
    server = devserve("-p", "0", "chainapp:app", cwd=APPS)
    assert server.request("/handled").text == "handler"
    assert server.request("/anything").text == "the app"
    assert server.request("/xmlrpc/2/common", "POST", b"").text == "the app"  # no RPC here


# --- --proxy-mode ---

FORWARDED = {
    "X-Forwarded-For": "203.0.113.7",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "shop.example.com",
}


@pytest.mark.parametrize("target", ["addons", "plain"])
def test_proxy_mode(devserve: StartDevserve, tmp_path: Path, target: str) -> None:
    if target == "addons":
        args, cwd, path = [str(copy_addons(tmp_path))], tmp_path, "/webtest/whoami"
    else:
        args, cwd, path = ["chainapp:app"], APPS, "/whoami"
    direct = devserve("-p", "0", *args, cwd=cwd)
    proxied = devserve("-p", "0", "--proxy-mode", *args, cwd=cwd)
    local = {"host": f"127.0.0.1:{direct.port}", "scheme": "http", "remote_addr": "127.0.0.1"}

    def whoami(server: DevserveProcess, headers: dict[str, str]) -> dict[str, str]:
        return json.loads(server.request(path, headers=headers).body)  # type: ignore[no-any-return]

    assert whoami(direct, FORWARDED) == local  # never trusted without --proxy-mode
    assert whoami(proxied, FORWARDED) == {
        "host": "shop.example.com",
        "scheme": "https",
        "remote_addr": "203.0.113.7",
    }
    without_host = {k: v for k, v in FORWARDED.items() if k != "X-Forwarded-Host"}
    assert whoami(proxied, without_host) == {**local, "host": f"127.0.0.1:{proxied.port}"}


# --- static files ---


@pytest.mark.parametrize(
    ("filename", "content_type"),
    [
        ("app.css", "text/css"),
        ("app.js", "text/javascript"),
        ("icon.svg", "image/svg+xml"),
        ("data.json", "application/json"),
        ("font.woff2", "font/woff2"),
        ("sub/page.txt", "text/plain"),
        ("alias.css", "text/css"),  # a symlink that stays inside static/
    ],
)
def test_static_content_types_and_nosniff(
    web: DevserveProcess, filename: str, content_type: str
) -> None:
    response = web.request(f"/webtest/static/{filename}")
    assert response.status == 200
    assert response.headers["Content-Type"].split(";")[0] == content_type
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    source = filename.replace("alias.css", "app.css")
    assert response.body == (APPS / "webaddons" / "webtest" / "static" / source).read_bytes()


def test_static_revalidation_is_304(web: DevserveProcess) -> None:
    first = web.request("/webtest/static/app.css")
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    for headers in ({"If-None-Match": etag}, {"If-Modified-Since": modified}):
        fresh = web.request("/webtest/static/app.css", headers=headers)
        assert fresh.status == 304, headers
        assert fresh.body == b""
        assert fresh.headers["X-Content-Type-Options"] == "nosniff"
        assert fresh.headers["ETag"] == etag
    stale = web.request("/webtest/static/app.css", headers={"If-None-Match": '"not-it"'})
    assert (stale.status, stale.body) == (200, first.body)
    old = web.request(
        "/webtest/static/app.css", headers={"If-Modified-Since": "Mon, 01 Jan 2001 00:00:00 GMT"}
    )
    assert old.status == 200
    head = web.request("/webtest/static/app.css", "HEAD")
    assert (head.status, head.body, head.headers["ETag"]) == (200, b"", etag)


TRAVERSALS = [
    "../secret.txt",
    "../../secret.txt",
    "%2e%2e/secret.txt",
    "%2E%2E/%2E%2E/secret.txt",
    "..%2fsecret.txt",
    "%2e%2e%2fsecret.txt",
    "sub/../../secret.txt",
    "sub/%2e%2e/%2e%2e/secret.txt",
    "..\\secret.txt",
    "%5c..%5csecret.txt",
    "..%5c..%5csecret.txt",
    "sub\\..\\..\\secret.txt",
    "a%00b.txt",
    "app.css%00.txt",
    "link-out.txt",  # a symlink in static/ leading out
    "dir-out/secret.txt",  # through a symlinked folder leading out
    "ABSOLUTE",  # the secret's absolute path
    "ABSOLUTE-ENCODED",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_static_never_escapes_the_static_folder(web: DevserveProcess, path: str) -> None:
    secret = str(Path(web.args[-1]).parent / "secret.txt")
    path = {"ABSOLUTE": secret, "ABSOLUTE-ENCODED": secret.replace("/", "%2f")}.get(path, path)
    response = web.request(f"/webtest/static/{path}")
    assert SECRET not in response.text
    if response.status in (301, 308):  # merged slashes: the canonical URL is still inside
        assert response.headers["Location"].split("?")[0].endswith("/secret.txt")
        assert "/webtest/static/" in response.headers["Location"]
        response = web.request(response.headers["Location"].split(str(web.port), 1)[1])
    assert response.status == 404, path
    assert SECRET not in response.text


# --- RPC ---


def test_xmlrpc_services_with_server_proxy(web: DevserveProcess) -> None:
    common = proxy(web, "/xmlrpc/2/common")
    version = common.version()
    assert version["protocol_version"] == 1
    assert version["server_version"] == ".".join(map(str, version["server_version_info"][:3]))
    assert common.about().startswith(f"devserve {version['server_version']}")
    assert list(common.addons().items()) == [("webtest", "2.5"), ("webother", "0.3")]
    for path in ("/xmlrpc/2/inventory", "/xmlrpc/inventory"):
        inventory = proxy(web, path)
        assert inventory.count("abc") == 3
        assert inventory.count("abc", 4) == 12
        assert inventory.echo(1, "two", [3.5], {"four": b"4"}) == [1, "two", [3.5], {"four": b"4"}]
        assert inventory.nothing() is None
        assert inventory.addon() == "webtest"
    assert proxy(web, "/xmlrpc/2/other").ping() == "pong"


def test_xmlrpc2_faults_have_integer_codes(web: DevserveProcess) -> None:
    inventory = proxy(web, "/xmlrpc/2/inventory")
    unknown = fault_of(proxy(web, "/xmlrpc/2/nope").count, "x")
    assert unknown.faultCode == -32601
    assert unknown.faultString == "unknown service 'nope' (known: common, inventory, other)"
    missing = fault_of(inventory.restock)
    assert (missing.faultCode, missing.faultString) == (
        -32601,
        "service 'inventory' has no method 'restock'",
    )
    assert fault_of(inventory._secret).faultCode == -32601
    assert fault_of(inventory.__getattr__("__init__")).faultCode == -32601
    assert inventory.secret_calls() == 0  # never executed
    params = fault_of(inventory.count)
    assert (params.faultCode, params.faultString) == (
        -32602,
        "Invalid params: missing a required argument: 'item'",
    )
    failed = fault_of(inventory.fail)
    assert (failed.faultCode, failed.faultString) == (1, "out of stock")
    assert "Traceback" not in failed.faultString
    web.wait_for_log(r"XML-RPC call to /xmlrpc/2/inventory failed\nTraceback")
    unmarshallable = fault_of(inventory.unmarshallable)
    assert unmarshallable.faultCode == 1
    assert "set" in unmarshallable.faultString


def test_xmlrpc_legacy_faults_have_string_codes(web: DevserveProcess) -> None:
    inventory = proxy(web, "/xmlrpc/inventory")
    failed = fault_of(inventory.fail)
    assert (failed.faultCode, failed.faultString) == ("out of stock", "")
    unknown = fault_of(proxy(web, "/xmlrpc/nope").count, "x")
    assert unknown.faultCode == "unknown service 'nope' (known: common, inventory, other)"
    assert fault_of(inventory._secret).faultCode == "service 'inventory' has no method '_secret'"
    assert fault_of(inventory.count).faultCode.startswith("Invalid params: ")
    assert inventory.secret_calls() == 0


def test_xmlrpc_faults_with_dev_carry_the_traceback(web_dev: DevserveProcess) -> None:
    modern = fault_of(proxy(web_dev, "/xmlrpc/2/inventory").fail)
    assert modern.faultCode == 1
    assert modern.faultString.startswith("out of stock\n\nTraceback (most recent call last)")
    legacy = fault_of(proxy(web_dev, "/xmlrpc/inventory").fail)
    assert legacy.faultCode == "out of stock"
    assert 'raise LookupError("out of stock")' in legacy.faultString


def test_jsonrpc_endpoint(web: DevserveProcess) -> None:
    def service_call(service: str, method: str, *args: Any, number: int = 1) -> dict[str, Any]:
        return call({"service": service, "method": method, "args": list(args)}, number)

    answer = rpc_answer(web, "/jsonrpc", service_call("inventory", "count", "abcd"))
    assert answer == {"jsonrpc": "2.0", "id": 1, "result": 4}
    version = rpc_answer(web, "/jsonrpc", service_call("common", "version"))["result"]
    assert version["protocol_version"] == 1
    batch = [
        service_call("inventory", "count", "ab", number=1),
        service_call("inventory", "_secret", number=2),
        service_call("nope", "count", number=3),
        service_call("inventory", "count", number=4),
        service_call("inventory", "fail", number=5),
        call({"service": "inventory"}, 6),
    ]
    results = rpc_answer(web, "/jsonrpc", batch)
    assert results[0]["result"] == 2
    codes = [entry["error"]["code"] for entry in results[1:]]
    assert codes == [-32601, -32601, -32602, -32000, -32602]
    assert results[4]["error"]["message"] == "out of stock"
    assert rpc_answer(web, "/jsonrpc", service_call("inventory", "secret_calls"))["result"] == 0
    assert rpc_answer(web, "/jsonrpc", b"{not json")["error"]["code"] == -32700


def test_rpc_endpoints_take_post_only(web: DevserveProcess) -> None:
    for path in ("/xmlrpc/2/common", "/xmlrpc/common", "/jsonrpc"):
        response = web.request(path)
        assert (response.status, response.headers["Allow"]) == (405, "POST"), path


def _peak_rss_kib(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line for line in status.splitlines() if line.startswith("VmHWM:")).split()[1])


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (BILLION_LAUGHS, "Parse error: a DTD or an entity declaration"),
        (EXTERNAL_ENTITY, "Parse error: a DTD or an entity declaration"),
        (b"<methodCall><methodName>count</methodName><params>", "Parse error: ExpatError"),
        (b"\x00\xff garbage", "Parse error: ExpatError"),
    ],
    ids=["billion-laughs", "external-entity", "truncated", "garbage"],
)
def test_hostile_and_malformed_xml_is_a_fault(web: DevserveProcess, body: bytes, why: str) -> None:
    peak = _peak_rss_kib(web.pid)
    started = time.monotonic()
    response = web.request("/xmlrpc/2/inventory", "POST", body, {"Content-Type": "text/xml"})
    assert time.monotonic() - started < 3
    assert response.status == 200
    with pytest.raises(xmlrpc.client.Fault) as fault:
        xmlrpc.client.loads(response.body)
    assert fault.value.faultCode == -32700
    assert fault.value.faultString.startswith(why)
    assert "root:" not in fault.value.faultString
    assert _peak_rss_kib(web.pid) - peak < 20 * 1024  # nothing expanded in memory
    assert proxy(web, "/xmlrpc/2/inventory").count("ok") == 2  # and it serves on


def test_an_rpc_body_over_the_limit_is_413(devserve: StartDevserve, tmp_path: Path) -> None:
    server = devserve("-p", "0", "--limit-request-body", "1", str(copy_addons(tmp_path)))
    inventory = proxy(server, "/xmlrpc/2/inventory")
    with pytest.raises(xmlrpc.client.ProtocolError) as refused:
        inventory.count("x" * (2 << 20))
    assert refused.value.errcode == 413
    params = {"service": "inventory", "method": "count", "args": ["x" * (2 << 20)]}
    assert post_json(server, "/jsonrpc", call(params)).status == 413
    assert proxy(server, "/xmlrpc/2/inventory").count("x" * 1000) == 1000  # under it: served


# --- the example addon, as the README shows it ---


def test_example_json_route_and_rpc_service(devserve: StartDevserve) -> None:
    server = devserve("-p", "0", str(EXAMPLE_ADDONS))
    total = rpc_answer(server, "/hello/sum", call({"numbers": [1, 2, 3]}))
    assert total == {"jsonrpc": "2.0", "id": 1, "result": 6}
    assert proxy(server, "/xmlrpc/2/hello").greet("you") == "Hello, you!"
    assert proxy(server, "/xmlrpc/2/common").addons() == {"hello": "1.0"}
    greeting = call({"service": "hello", "method": "greet", "args": ["you"]})
    assert rpc_answer(server, "/jsonrpc", greeting)["result"] == "Hello, you!"
