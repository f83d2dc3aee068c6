"""JSON-RPC 2.0 over HTTP, through a Werkzeug test client and a small callee."""

from __future__ import annotations

import json
from typing import Any

import pytest
from werkzeug.test import Client
from werkzeug.wrappers import Request, Response

from devserve import jsonrpc
from devserve.jsonrpc import Call, RpcError

CALLS: list[Call] = []


def callee(call: Call) -> Any:
    """``add`` adds its params, ``fail`` raises, ``rpc_error`` raises an RpcError."""
    CALLS.append(call)
    params = call.params
    if call.method == "fail":
        raise KeyError("the message")
    if call.method == "silent":
        raise RuntimeError()
    if call.method == "rpc_error":
        raise RpcError(-32001, "custom")
    if call.method == "nan":
        return float("nan")
    if call.method == "object":
        return object()
    if call.method == "echo":
        return params
    return sum(params.values()) if isinstance(params, dict) else sum(params)


def make_app(dev: bool = False) -> Any:
    def app(environ: Any, start_response: Any) -> Any:
        return jsonrpc.serve(Request(environ), callee, dev)(environ, start_response)

    return app


@pytest.fixture(autouse=True)
def _calls() -> None:
    CALLS.clear()


def post(body: Any, dev: bool = False, raw: bool = False, **kwargs: Any) -> Response:
    data = body if raw else json.dumps(body)
    kwargs.setdefault("content_type", "application/json")
    return Client(make_app(dev)).post("/rpc", data=data, **kwargs)  # type: ignore[no-any-return]


def call(method: str = "add", params: Any = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method, **extra}
    if params is not None:
        body["params"] = params
    return body


def test_result_with_named_and_positional_params() -> None:
    response = post(call(params={"a": 2, "b": 3}))
    assert response.status_code == 200
    assert response.mimetype == "application/json"
    assert response.json == {"jsonrpc": "2.0", "id": 1, "result": 5}
    assert post(call(params=[1, 2, 3], id="x")).json == {"jsonrpc": "2.0", "id": "x", "result": 6}
    assert post(call("echo")).json["result"] == {}  # no params: an empty object


def test_unicode_is_utf8() -> None:
    response = post(call("echo", {"word": "café ☕"}))
    assert "café ☕".encode() in response.data
    assert response.json["result"] == {"word": "café ☕"}


@pytest.mark.parametrize(
    "body", [b"{", b"not json", b"", b"[1, 2", b"\xff\xfe\x00", b"[" * 100_000 + b"]" * 100_000]
)
def test_parse_error(body: bytes) -> None:
    response = post(body, raw=True)
    assert response.status_code == 200
    answer = response.json
    assert answer["id"] is None
    assert answer["error"]["code"] == jsonrpc.PARSE_ERROR
    assert answer["error"]["message"].startswith("Parse error")
    assert not CALLS


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (42, "not an object"),
        ("call", "not an object"),
        ({"id": 1, "method": "add"}, '"jsonrpc" must be "2.0"'),
        ({"jsonrpc": "1.0", "id": 1, "method": "add"}, '"jsonrpc" must be "2.0"'),
        ({"jsonrpc": 2.0, "id": 1, "method": "add"}, '"jsonrpc" must be "2.0"'),
        ({"jsonrpc": "2.0", "id": 1}, '"method" must be a string'),
        ({"jsonrpc": "2.0", "id": 1, "method": 7}, '"method" must be a string'),
        ({"jsonrpc": "2.0", "id": {"a": 1}, "method": "add"}, '"id" must be'),
        ({"jsonrpc": "2.0", "id": True, "method": "add"}, '"id" must be'),
        ({"jsonrpc": "2.0", "id": 1, "method": "add", "params": "x"}, '"params" must be'),
        ({"jsonrpc": "2.0", "id": 1, "method": "add", "params": 3}, '"params" must be'),
    ],
)
def test_invalid_request(body: Any, why: str) -> None:
    answer = post(body).json
    assert answer["error"]["code"] == jsonrpc.INVALID_REQUEST
    assert answer["error"]["message"].startswith(f"Invalid Request: {why}")
    valid_id = isinstance(body, dict) and body.get("id") == 1 and body.get("id") is not True
    assert answer["id"] == (1 if valid_id else None)  # an unreadable id is null
    assert not CALLS


def test_null_id_is_answered_absent_id_is_a_notification() -> None:
    assert post(call(params=[1], id=None)).json == {"jsonrpc": "2.0", "id": None, "result": 1}
    notification = {"jsonrpc": "2.0", "method": "add", "params": [1]}
    response = post(notification)
    assert response.status_code == 204
    assert response.data == b""
    assert len(CALLS) == 2  # the notification ran


def test_a_failing_notification_is_not_answered() -> None:
    response = post({"jsonrpc": "2.0", "method": "fail"})
    assert response.status_code == 204
    assert [c.method for c in CALLS] == ["fail"]


def test_batch_answers_the_calls_with_an_id_in_order() -> None:
    batch = [
        call(params=[1, 2], id=1),
        {"jsonrpc": "2.0", "method": "add", "params": [5]},  # a notification: no entry
        {"foo": "boo"},
        call("fail", id="two"),
        7,
        call(params=[10], id=3),
    ]
    answer = post(batch).json
    assert [entry["id"] for entry in answer] == [1, None, "two", None, 3]
    assert answer[0]["result"] == 3
    assert answer[1]["error"]["code"] == jsonrpc.INVALID_REQUEST
    assert answer[2]["error"]["code"] == jsonrpc.SERVER_ERROR
    assert answer[3]["error"]["code"] == jsonrpc.INVALID_REQUEST
    assert answer[4]["result"] == 10
    assert [c.params for c in CALLS] == [[1, 2], [5], {}, [10]]


def test_batch_of_notifications_is_204_and_empty_batch_is_invalid() -> None:
    notifications = [{"jsonrpc": "2.0", "method": "add", "params": [n]} for n in range(3)]
    response = post(notifications)
    assert response.status_code == 204
    assert len(CALLS) == 3
    empty = post([]).json
    assert empty == {
        "jsonrpc": "2.0",
        "id": None,
        "error": {"code": jsonrpc.INVALID_REQUEST, "message": "Invalid Request: empty batch"},
    }


def test_rpc_error_is_answered_as_it_is() -> None:
    error = post(call("rpc_error")).json["error"]
    assert error == {"code": -32001, "message": "custom"}


def test_server_error_without_dev_has_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    error = post(call("fail")).json["error"]
    assert error == {"code": jsonrpc.SERVER_ERROR, "message": "'the message'"}
    assert "Traceback" in caplog.text  # logged on the server all the same
    assert "KeyError: 'the message'" in caplog.text


def test_server_error_with_dev_has_the_traceback() -> None:
    error = post(call("fail"), dev=True).json["error"]
    assert error["code"] == jsonrpc.SERVER_ERROR
    assert error["message"] == "'the message'"
    assert error["data"]["name"] == "builtins.KeyError"
    assert error["data"]["traceback"].startswith("Traceback (most recent call last)")
    assert 'raise KeyError("the message")' in error["data"]["traceback"]


def test_server_error_without_a_message_is_named_by_its_type() -> None:
    assert post(call("silent")).json["error"]["message"] == "RuntimeError"


@pytest.mark.parametrize(
    ("method", "message"),
    [("nan", "Out of range float values"), ("object", "not JSON serializable")],
)
def test_a_result_json_cannot_carry_is_a_server_error(method: str, message: str) -> None:
    answer = post([call(method), call(params=[2], id=2)]).json
    assert answer[0]["error"]["code"] == jsonrpc.SERVER_ERROR
    assert message in answer[0]["error"]["message"]
    assert answer[1]["result"] == 2  # the rest of the batch is unharmed


@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_other_content_types_are_415(content_type: str) -> None:
    response = post(call(params=[1]), content_type=content_type)
    assert response.status_code == 415
    assert "Content-Type: application/json" in response.text
    assert not CALLS


def test_json_content_type_with_charset_is_accepted() -> None:
    response = post(call(params=[1]), content_type="application/json; charset=utf-8")
    assert response.json["result"] == 1


def test_invoke_checks_the_signature_before_calling() -> None:
    ran: list[object] = []

    def target(a: int, *, b: int = 0) -> int:
        ran.append(a)
        return a + b

    assert jsonrpc.invoke(target, (1,), {"b": 2}) == 3
    for args, kwargs in [((), {}), ((1, 2), {}), ((1,), {"c": 3}), ((), {"b": 1})]:
        with pytest.raises(RpcError) as raised:
            jsonrpc.invoke(target, args, kwargs)
        assert raised.value.code == jsonrpc.INVALID_PARAMS
        assert raised.value.message.startswith("Invalid params: ")
    assert ran == [1]  # the calls that did not bind never ran


def test_invoke_lets_a_type_error_from_inside_through() -> None:
    def target(word: str) -> int:
        return len(word, 2)  # type: ignore[call-arg]

    with pytest.raises(TypeError, match="len"):
        jsonrpc.invoke(target, ("x",))


def test_bind_error_of_callables_without_a_hash_or_a_signature() -> None:
    class Unhashable:
        __hash__ = None  # type: ignore[assignment]

        def __call__(self, a: int) -> int:
            return a

    assert jsonrpc.bind_error(Unhashable(), (1,)) is None
    assert jsonrpc.bind_error(Unhashable(), ()) == "missing a required argument: 'a'"
    # max() has no signature Python can read: its calls are not checked, just made.
    assert jsonrpc.signature(max) is None
    assert jsonrpc.bind_error(max, ()) is None
    assert jsonrpc.invoke(max, (1, 3, 2)) == 3
