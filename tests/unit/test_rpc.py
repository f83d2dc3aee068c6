"""RPC services and the /xmlrpc/2/, /xmlrpc/ and /jsonrpc endpoints, in process."""

from __future__ import annotations

import json
import textwrap
import time
import xmlrpc.client
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

import devserve
from devserve import addons, rpc
from devserve.errors import AppLoadError
from tests.payloads import BILLION_LAUGHS, EXTERNAL_ENTITY
from tests.unit.conftest import WriteAddon

SERVICE = """
from devserve import rpc
from devserve.http import request

CALLED = []


class Base:
    def inherited(self):
        return "from the base"


@rpc.service("{name}")
class Shop(Base):
    label = "not a method"

    class Nested:
        pass

    @property
    def prop(self):
        return "a property"

    def count(self, item, factor=1):
        return len(item) * factor

    def nothing(self):
        return None

    def fail(self):
        raise LookupError("out of stock")

    def silent(self):
        raise LookupError()

    def addon(self):
        return request.addon

    def big(self):
        return 2**40

    @staticmethod
    def static(x):
        return x * 2

    def _hidden(self):
        CALLED.append("_hidden")
        return "leaked"
"""


def load(
    root: Path, write_addon: WriteAddon, unique: Callable[[str], str], count: int = 1
) -> tuple[list[addons.Addon], list[str]]:
    """``count`` addons in ``root``, each declaring a service named after it."""
    names = []
    for _ in range(count):
        name = unique("shop")
        write_addon(root, name, code=SERVICE.format(name=name), depends=names[-1:])
        names.append(name)
    found = addons.discover([str(root)])
    addons.import_addons(found, [str(root)])
    return found, names


@pytest.fixture
def shop(
    tmp_path: Path, write_addon: WriteAddon, unique: Callable[[str], str]
) -> tuple[list[addons.Addon], str]:
    found, names = load(tmp_path / "addons", write_addon, unique)
    return found, names[0]


def client(found: list[addons.Addon], dev: bool = False) -> Client:
    endpoints = rpc.Endpoints(found, dev)

    def app(environ: Any, start_response: Any) -> Any:
        answer = endpoints(environ, start_response)
        assert answer is not None, f"the endpoints passed on {environ['PATH_INFO']}"
        return answer

    return Client(app)


def xmlrpc_call(client: Client, path: str, method: str, *args: Any) -> Any:
    """The result, or the Fault raised, as xmlrpc.client reads the answer."""
    body = xmlrpc.client.dumps(args, method, allow_none=True)
    response = client.post(path, data=body, content_type="text/xml")
    assert response.status_code == 200
    assert response.mimetype == "text/xml"
    try:
        return xmlrpc.client.loads(response.data, use_builtin_types=True)[0][0]
    except xmlrpc.client.Fault as fault:
        return fault


def jsonrpc_call(client: Client, service: str, method: str, *args: Any) -> Any:
    params = {"service": service, "method": method, "args": list(args)}
    body = {"jsonrpc": "2.0", "id": 1, "method": "call", "params": params}
    return client.post("/jsonrpc", json=body).json


# --- services ---


def test_public_methods_only_are_exposed(shop: tuple[list[addons.Addon], str]) -> None:
    found, name = shop
    methods = rpc.Services(found).methods
    expected = {"addon", "big", "count", "fail", "inherited", "nothing", "silent", "static"}
    assert set(methods[name]) == expected
    assert set(methods["common"]) == {"about", "addons", "version"}


def test_services_of_addons_not_served_and_of_other_modules_are_not_exposed(
    tmp_path: Path, write_addon: WriteAddon, unique: Callable[[str], str]
) -> None:
    found, names = load(tmp_path / "addons", write_addon, unique, count=2)

    @rpc.service("stray")
    class Stray:  # declared outside any addon
        def hello(self) -> str:
            return "stray"

    only_first = [addon for addon in found if addon.name == names[0]]
    assert set(rpc.Services(only_first).methods) == {"common", names[0]}
    assert set(rpc.Services(found).methods) == {"common", *names}


def test_a_service_name_declared_twice_is_an_error(
    tmp_path: Path, write_addon: WriteAddon, unique: Callable[[str], str]
) -> None:
    first, second = unique("one"), unique("two")
    code = "from devserve import rpc\n\n@rpc.service('same')\nclass {cls}:\n    pass\n"
    write_addon(tmp_path, first, code=code.format(cls="First"))
    write_addon(tmp_path, second, code=code.format(cls="Second"))
    found = addons.discover([str(tmp_path)])
    addons.import_addons(found, [str(tmp_path)])
    with pytest.raises(AppLoadError, match=r"RPC service 'same' is declared twice \(.*First"):
        rpc.Services(found)


def test_a_service_that_cannot_be_created_is_an_app_load_error(
    tmp_path: Path, write_addon: WriteAddon, unique: Callable[[str], str]
) -> None:
    name = unique("needy")
    code = """
    from devserve import rpc

    @rpc.service("needy")
    class Needy:
        def __init__(self, database):
            self.database = database
    """
    write_addon(tmp_path, name, code=textwrap.dedent(code))
    found = addons.discover([str(tmp_path)])
    addons.import_addons(found, [str(tmp_path)])
    with pytest.raises(AppLoadError, match=r"could not be created: TypeError.*takes no arguments"):
        rpc.Services(found)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("common", "devserve's own"),
        ("", "must be a Python identifier"),
        ("a/b", "must be a Python identifier"),
        ("2fast", "must be a Python identifier"),
    ],
)
def test_bad_service_names(name: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rpc.service(name)


def test_common_service(
    tmp_path: Path, write_addon: WriteAddon, unique: Callable[[str], str]
) -> None:
    found, names = load(tmp_path / "addons", write_addon, unique, count=2)
    xml = client(found)
    version = xmlrpc_call(xml, "/xmlrpc/2/common", "version")
    assert version == {
        "server_version": devserve.__version__,
        "server_version_info": [
            *(int(part) for part in devserve.__version__.split(".")),
            "final",
            0,
        ],
        "protocol_version": 1,
    }
    assert xmlrpc_call(xml, "/xmlrpc/2/common", "about").startswith(
        f"devserve {devserve.__version__}"
    )
    addons_served = xmlrpc_call(xml, "/xmlrpc/2/common", "addons")
    assert addons_served == {names[0]: "1.0", names[1]: "1.0"}
    assert jsonrpc_call(xml, "common", "addons")["result"] == addons_served


# --- XML-RPC ---


def test_xmlrpc_calls(shop: tuple[list[addons.Addon], str]) -> None:
    found, name = shop
    xml = client(found)
    for path in (f"/xmlrpc/2/{name}", f"/xmlrpc/{name}"):
        assert xmlrpc_call(xml, path, "count", "abc") == 3
        assert xmlrpc_call(xml, path, "count", "abc", 2) == 6
        assert xmlrpc_call(xml, path, "inherited") == "from the base"
        assert xmlrpc_call(xml, path, "static", 21) == 42
        assert xmlrpc_call(xml, path, "nothing") is None
        assert xmlrpc_call(xml, path, "addon") == name  # request.addon is the service's


def _fault(xml: Client, path: str, method: str, *args: Any) -> xmlrpc.client.Fault:
    answer = xmlrpc_call(xml, path, method, *args)
    assert isinstance(answer, xmlrpc.client.Fault), answer
    return answer


def test_xmlrpc2_faults_have_integer_codes(shop: tuple[list[addons.Addon], str]) -> None:
    found, name = shop
    xml = client(found)
    path = f"/xmlrpc/2/{name}"
    unknown = _fault(xml, "/xmlrpc/2/nope", "count")
    assert (unknown.faultCode, unknown.faultString) == (
        -32601,
        f"unknown service 'nope' (known: common, {name})",
    )
    missing = _fault(xml, path, "nope")
    assert (missing.faultCode, missing.faultString) == (
        -32601,
        f"service {name!r} has no method 'nope'",
    )
    for hidden in ("_hidden", "__init__", "__class__", "label", "prop", "Nested"):
        assert _fault(xml, path, hidden).faultCode == -32601, hidden
    bad_args = _fault(xml, path, "count")
    assert bad_args.faultCode == -32602
    assert bad_args.faultString == "Invalid params: missing a required argument: 'item'"
    raised = _fault(xml, path, "fail")
    assert (raised.faultCode, raised.faultString) == (1, "out of stock")
    assert _fault(xml, path, "silent").faultString == "LookupError"
    too_big = _fault(xml, path, "big")
    assert (too_big.faultCode, too_big.faultString) == (1, "int exceeds XML-RPC limits")
    module = __import__(f"devserve_addons.{name}", fromlist=["CALLED"])
    assert module.CALLED == []  # _hidden never ran


def test_xmlrpc_legacy_faults_have_string_codes(shop: tuple[list[addons.Addon], str]) -> None:
    found, name = shop
    xml = client(found)
    path = f"/xmlrpc/{name}"
    raised = _fault(xml, path, "fail")
    assert (raised.faultCode, raised.faultString) == ("out of stock", "")
    missing = _fault(xml, path, "_hidden")
    assert (missing.faultCode, missing.faultString) == (
        f"service {name!r} has no method '_hidden'",
        "",
    )
    assert _fault(xml, path, "count").faultCode.startswith("Invalid params: ")


def test_xmlrpc_faults_with_dev_carry_the_traceback(shop: tuple[list[addons.Addon], str]) -> None:
    found, name = shop
    xml = client(found, dev=True)
    modern = _fault(xml, f"/xmlrpc/2/{name}", "fail")
    assert modern.faultCode == 1
    assert modern.faultString.startswith("out of stock\n\nTraceback (most recent call last)")
    assert 'raise LookupError("out of stock")' in modern.faultString
    legacy = _fault(xml, f"/xmlrpc/{name}", "fail")
    assert legacy.faultCode == "out of stock"
    assert legacy.faultString.startswith("Traceback (most recent call last)")


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (BILLION_LAUGHS, "DTD or an entity declaration"),
        (EXTERNAL_ENTITY, "DTD or an entity declaration"),
        (b"<methodCall><methodName>count", "ExpatError"),
        (b"", "ExpatError"),
        (b"not xml at all", "ExpatError"),
        (
            b"<methodCall><methodName>count</methodName><params><param><value><int>x</int>"
            b"</value></param></params></methodCall>",
            "ValueError",
        ),
    ],
)
def test_hostile_or_malformed_xml_is_a_parse_fault(
    shop: tuple[list[addons.Addon], str], body: bytes, why: str
) -> None:
    found, name = shop
    xml = client(found)
    started = time.monotonic()
    response = xml.post(f"/xmlrpc/2/{name}", data=body, content_type="text/xml")
    assert time.monotonic() - started < 2  # refused, not expanded
    with pytest.raises(xmlrpc.client.Fault) as fault:
        xmlrpc.client.loads(response.data)
    assert fault.value.faultCode == -32700
    assert fault.value.faultString.startswith("Parse error: ")
    assert why in fault.value.faultString
    assert "root:" not in fault.value.faultString  # no file was read into it


def test_a_method_response_is_not_a_call(shop: tuple[list[addons.Addon], str]) -> None:
    found, name = shop
    body = xmlrpc.client.dumps((1,), methodresponse=True)
    response = client(found).post(f"/xmlrpc/2/{name}", data=body)
    with pytest.raises(xmlrpc.client.Fault) as fault:
        xmlrpc.client.loads(response.data)
    assert fault.value.faultCode == -32600


@pytest.mark.parametrize("path", ["/xmlrpc/2/common", "/xmlrpc/common", "/jsonrpc"])
def test_only_post(shop: tuple[list[addons.Addon], str], path: str) -> None:
    found, _name = shop
    response = client(found).get(path)
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"


@pytest.mark.parametrize(
    "path",
    ["/", "/xmlrpc", "/xmlrpc/", "/xmlrpc/2/", "/xmlrpc/3/common", "/xmlrpc/2/a/b", "/jsonrpc/x"],
)
def test_other_paths_pass_to_the_next_handler(
    shop: tuple[list[addons.Addon], str], path: str
) -> None:
    found, _name = shop
    endpoints = rpc.Endpoints(found)
    started: list[str] = []
    environ = {"PATH_INFO": path, "REQUEST_METHOD": "POST"}
    assert endpoints(environ, lambda status, headers: started.append(status)) is None  # type: ignore[arg-type, func-returns-value]
    assert started == []


# --- JSON-RPC ---


def test_jsonrpc_calls_and_errors(shop: tuple[list[addons.Addon], str]) -> None:
    found, name = shop
    js = client(found)
    assert jsonrpc_call(js, name, "count", "abcd") == {"jsonrpc": "2.0", "id": 1, "result": 4}
    assert jsonrpc_call(js, name, "_hidden")["error"]["code"] == -32601
    assert jsonrpc_call(js, "nope", "count")["error"]["code"] == -32601
    assert jsonrpc_call(js, name, "count")["error"]["code"] == -32602
    failed = jsonrpc_call(js, name, "fail")["error"]
    assert failed == {"code": -32000, "message": "out of stock"}
    module = __import__(f"devserve_addons.{name}", fromlist=["CALLED"])
    assert module.CALLED == []


@pytest.mark.parametrize(
    "params",
    [
        [],
        {"method": "count"},
        {"service": 1, "method": "count"},
        {"service": "x", "method": None},
        {"service": "x", "method": "count", "args": "abc"},
    ],
)
def test_jsonrpc_params_must_name_service_method_and_args(
    shop: tuple[list[addons.Addon], str], params: Any
) -> None:
    found, _name = shop
    body = {"jsonrpc": "2.0", "id": 7, "method": "call", "params": params}
    error = client(found).post("/jsonrpc", json=body).json["error"]
    assert error["code"] == -32602
    assert '{"service": "...", "method": "...", "args": [...]}' in error["message"]


def test_jsonrpc_batch(shop: tuple[list[addons.Addon], str]) -> None:
    found, name = shop

    def entry(number: int, method: str, *args: Any) -> dict[str, Any]:
        params = {"service": name, "method": method, "args": list(args)}
        return {"jsonrpc": "2.0", "id": number, "method": "call", "params": params}

    batch = [entry(1, "count", "ab"), entry(2, "fail"), entry(3, "count", "abc", 3)]
    answer = client(found).post("/jsonrpc", data=json.dumps(batch), content_type="application/json")
    results = answer.json
    assert [r.get("result") for r in results] == [2, None, 9]
    assert results[1]["error"]["code"] == -32000
