"""JSON-RPC 2.0 over HTTP: the protocol of ``type="json"`` routes and of ``/jsonrpc``.

A POST body (``Content-Type: application/json``) holds one request object or a batch (a
list of them). :func:`serve` checks each one and hands it, as a :class:`Call`, to a callee:
what the callee returns is the result; an :class:`RpcError` it raises is that error object;
any other exception is a server error (-32000) whose message is the exception's, with the
traceback in ``data`` only when a ``--dev`` mode is on. A notification (no ``"id"``) gets no
entry in the answer; a lone notification, or a batch of only notifications, answers 204.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import logging
import traceback
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from werkzeug.wrappers import Request as HTTPRequest
from werkzeug.wrappers import Response

__all__ = [
    "INVALID_PARAMS",
    "INVALID_REQUEST",
    "METHOD_NOT_FOUND",
    "PARSE_ERROR",
    "SERVER_ERROR",
    "Call",
    "RpcError",
    "bind_error",
    "invoke",
    "serve",
    "signature",
]

# The error codes of the JSON-RPC 2.0 specification (and of the XML-RPC fault code
# interoperability convention, which /xmlrpc/2/ follows).
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
SERVER_ERROR = -32000

# What a browser's cross-site form cannot send without a CORS preflight: a JSON body under a
# form's content type would let any page call a json route with the visitor's cookies.
JSON_MIMETYPES = ("application/json", "application/json-rpc", "application/jsonrequest")

_logger = logging.getLogger(__name__)

NO_ID = object()  # the "id" of a notification: absent, which is not null


class RpcError(Exception):
    """An error answered as it is: a JSON-RPC error object, an XML-RPC fault."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclasses.dataclass(frozen=True)
class Call:
    """One checked request object of a body."""

    id: Any  # NO_ID for a notification
    method: str
    params: dict[str, Any] | list[Any]

    @property
    def notification(self) -> bool:
        return self.id is NO_ID


Callee = Callable[[Call], Any]


@functools.lru_cache(maxsize=1024)
def _cached_signature(function: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(function)
    except ValueError:  # some built-ins have none: their calls are not checked
        return None


def signature(function: Callable[..., Any]) -> inspect.Signature | None:
    """The function's signature, computed once per function (it is looked at per call)."""
    try:
        return _cached_signature(function)
    except TypeError:  # an unhashable callable
        return _cached_signature.__wrapped__(function)


def bind_error(
    function: Callable[..., Any], args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None
) -> str | None:
    """Why these arguments do not fit the function's signature, or None when they do."""
    found = signature(function)
    try:
        if found is not None:
            found.bind(*args, **(kwargs or {}))
    except TypeError as error:
        return str(error)
    return None


def invoke(
    function: Callable[..., Any], args: Iterable[Any] = (), kwargs: Mapping[str, Any] | None = None
) -> Any:
    """Call ``function``; arguments that do not bind to its signature are the caller's error
    (INVALID_PARAMS, and the function never runs), a TypeError raised inside is the
    function's own."""
    args = tuple(args)
    problem = bind_error(function, args, kwargs)
    if problem is not None:
        raise RpcError(INVALID_PARAMS, f"Invalid params: {problem}")
    return function(*args, **(kwargs or {}))


def serve(httprequest: HTTPRequest, callee: Callee, dev: bool) -> Response:
    """Answer a JSON-RPC body: one call or a batch."""
    if httprequest.mimetype not in JSON_MIMETYPES:
        return Response(
            "a JSON-RPC endpoint takes a POST with Content-Type: application/json\n",
            status=415,
            mimetype="text/plain",
        )
    try:
        payload = json.loads(httprequest.get_data())
    except (ValueError, RecursionError) as error:  # RecursionError: absurdly deep nesting
        return _reply(_error(None, RpcError(PARSE_ERROR, f"Parse error: {error}")))
    where = httprequest.path
    if not isinstance(payload, list):
        entry = _answer(payload, callee, dev, where)
        return Response(status=204) if entry is None else _reply(entry)
    if not payload:
        return _reply(_error(None, RpcError(INVALID_REQUEST, "Invalid Request: empty batch")))
    entries = [entry for item in payload if (entry := _answer(item, callee, dev, where))]
    return _reply("[" + ",".join(entries) + "]") if entries else Response(status=204)


def _reply(body: str) -> Response:
    return Response(body, mimetype="application/json")


def _answer(item: Any, callee: Callee, dev: bool, where: str) -> str | None:
    """The encoded response object for one item of a body; None for a notification."""
    try:
        call = _check(item)
    except RpcError as error:
        return _error(item.get("id") if isinstance(item, dict) else None, error)
    try:
        result = callee(call)
        if call.notification:
            return None
        # Encoded here, call by call: a result JSON cannot carry is this call's error.
        return _encode({"jsonrpc": "2.0", "id": call.id, "result": result})
    except RpcError as error:
        answer = _error(call.id, error)
    except Exception as error:
        _logger.error("JSON-RPC call to %s failed", where, exc_info=error)
        answer = _server_error(call.id, error, dev)
    return None if call.notification else answer


def _valid_id(value: Any) -> bool:
    return value is None or (isinstance(value, (str, int, float)) and not isinstance(value, bool))


def _check(item: Any) -> Call:
    if not isinstance(item, dict):
        raise RpcError(INVALID_REQUEST, "Invalid Request: not an object")
    if item.get("jsonrpc") != "2.0":
        raise RpcError(INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0"')
    if not isinstance(item.get("method"), str):
        raise RpcError(INVALID_REQUEST, 'Invalid Request: "method" must be a string')
    if "id" in item and not _valid_id(item["id"]):
        raise RpcError(INVALID_REQUEST, 'Invalid Request: "id" must be a string, number or null')
    params = item.get("params", {})
    if not isinstance(params, (dict, list)):
        raise RpcError(INVALID_REQUEST, 'Invalid Request: "params" must be an object or array')
    return Call(item.get("id", NO_ID), item["method"], params)


def _encode(response: dict[str, Any]) -> str:
    # allow_nan=False: NaN and Infinity are not JSON, and a client's parser would choke.
    return json.dumps(response, ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _error(call_id: Any, error: RpcError, data: Any = None) -> str:
    body: dict[str, Any] = {"code": error.code, "message": error.message}
    if data is not None:
        body["data"] = data
    # An id that could not be read (or was invalid) is null, as the specification says.
    return _encode({"jsonrpc": "2.0", "id": call_id if _valid_id(call_id) else None, "error": body})


def _server_error(call_id: Any, error: Exception, dev: bool) -> str:
    message = str(error) or type(error).__name__
    data = None
    if dev:
        name = f"{type(error).__module__}.{type(error).__qualname__}"
        data = {"name": name, "traceback": "".join(traceback.format_exception(error))}
    return _error(call_id, RpcError(SERVER_ERROR, message), data)
