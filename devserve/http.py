"""The addons application: routes on controllers, the per-request ``request``, static files.

An addon declares routes on methods of :class:`Controller` subclasses::

    from devserve.http import Controller, request, route

    class Hello(Controller):
        @route("/hello/<int:count>", methods=["GET"])
        def hello(self, count):
            return f"hello x{count} from {request.httprequest.remote_addr}"

        @route("/hello/sum", type="json")
        def total(self, numbers):
            return sum(numbers)

:class:`Root` collects the controllers of the loaded addons into one Werkzeug ``Map``.
Route types dispatch through :data:`ROUTE_TYPES`: ``http`` routes get the query and form
parameters their signature accepts as keyword arguments, ``json`` routes speak JSON-RPC 2.0
(:mod:`devserve.jsonrpc`) and get its named params.
"""

from __future__ import annotations

import contextvars
import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar, cast

from werkzeug.exceptions import BadRequest, HTTPException, NotFound
from werkzeug.local import LocalProxy
from werkzeug.routing import Map, Rule
from werkzeug.utils import send_from_directory
from werkzeug.wrappers import Request as HTTPRequest
from werkzeug.wrappers import Response

from devserve import jsonrpc
from devserve.addons import Addon, addon_of

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = [
    "ROUTE_TYPES",
    "Controller",
    "Request",
    "Response",
    "Root",
    "request",
    "route",
]

F = TypeVar("F", bound=Callable[..., Any])

# Controller classes in definition order; Root keeps the ones of the addons it serves.
_controllers: list[type[Controller]] = []


@dataclasses.dataclass(frozen=True)
class Routing:
    """What ``@route`` records on a method."""

    paths: tuple[str, ...]
    methods: tuple[str, ...] | None
    type: str


def route(
    path: str | Iterable[str], methods: Iterable[str] | None = None, type: str = "http"
) -> Callable[[F], F]:
    """Expose a controller method at one or more URL rules (Werkzeug syntax: ``<int:id>``)."""
    paths = (path,) if isinstance(path, str) else tuple(path)
    if type not in ROUTE_TYPES:
        raise ValueError(f"unknown route type {type!r} (known: {', '.join(ROUTE_TYPES)})")

    def decorate(function: F) -> F:
        function.routing = Routing(  # type: ignore[attr-defined]
            paths, tuple(m.upper() for m in methods) if methods else None, type
        )
        return function

    return decorate


class Controller:
    """Base class of addon controllers. A subclass that derives from another controller
    replaces it: its methods (routed there or inherited) answer the parent's routes."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _controllers.append(cls)


class Request:
    """The request being served, as ``devserve.http.request`` in a route. ``dev`` says
    whether a --dev mode is on (error answers may then show tracebacks)."""

    def __init__(
        self,
        httprequest: HTTPRequest,
        addon: str | None = None,
        dev: bool = False,
        params: Mapping[str, Any] | None = None,
    ) -> None:
        self.httprequest = httprequest
        self.addon = addon
        self.dev = dev
        self._params = params

    @property
    def params(self) -> dict[str, Any]:
        """The route's parameters: for a json route, the JSON-RPC call's named params; for an
        http route, the query string, form fields and uploaded files, merged (form wins)."""
        if self._params is not None:
            return dict(self._params)
        http = self.httprequest
        return {**http.args.to_dict(), **http.form.to_dict(), **http.files.to_dict()}


# A stack rather than one value, so a request can dispatch another (an RPC batch) and return.
_request_stack: contextvars.ContextVar[tuple[Request, ...]] = contextvars.ContextVar(
    "devserve_request_stack", default=()
)


def _current_request() -> Request:
    stack = _request_stack.get()
    if not stack:
        raise RuntimeError("devserve.http.request is only available while serving a request")
    return stack[-1]


request = cast(Request, LocalProxy(_current_request))


@contextmanager
def bound_request(current: Request) -> Iterator[Request]:
    token = _request_stack.set((*_request_stack.get(), current))
    try:
        yield current
    finally:
        _request_stack.reset(token)


def make_response(result: Any) -> Response:
    """Turn what an ``http`` route returned into a response."""
    if isinstance(result, Response):
        return result
    if isinstance(result, (str, bytes)):
        return Response(result, mimetype="text/html")
    if result is None:
        return Response(status=204)
    raise TypeError(f"a route returned {type(result).__name__}; return str, bytes or a Response")


def _keyword_names(function: Callable[..., Any]) -> frozenset[str] | None:
    """The parameters a function takes by name; None when it takes ``**kwargs`` (any)."""
    signature = jsonrpc.signature(function)
    if signature is None:
        return frozenset()
    names = set()
    for parameter in signature.parameters.values():
        if parameter.kind is parameter.VAR_KEYWORD:
            return None
        if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
            names.add(parameter.name)
    return frozenset(names)


def _dispatch_http(endpoint: Callable[..., Any], arguments: Mapping[str, Any]) -> Response:
    """Call with the URL's arguments and the parameters the endpoint accepts (others, such
    as ``?utm_source=``, are left in ``request.params``); the URL's win a name clash."""
    names = _keyword_names(endpoint)
    kwargs: dict[str, Any] = {}
    if names is None or names - arguments.keys():  # parsing a form costs: only if wanted
        params = request.params
        kwargs = params if names is None else {k: v for k, v in params.items() if k in names}
    kwargs.update(arguments)
    problem = jsonrpc.bind_error(endpoint, (), kwargs)
    if problem is not None:
        raise BadRequest(f"wrong parameters for {request.httprequest.path}: {problem}")
    return make_response(endpoint(**kwargs))


def _dispatch_json(endpoint: Callable[..., Any], arguments: Mapping[str, Any]) -> Response:
    """JSON-RPC 2.0: each call of the body (one, or a batch) with its named params and the
    URL's arguments, as a request of its own on the stack."""
    outer = _current_request()

    def call(rpc: jsonrpc.Call) -> Any:
        if not isinstance(rpc.params, dict):
            raise jsonrpc.RpcError(
                jsonrpc.INVALID_PARAMS, "Invalid params: a json route takes named params"
            )
        current = Request(outer.httprequest, outer.addon, outer.dev, rpc.params)
        with bound_request(current):
            return jsonrpc.invoke(endpoint, (), {**rpc.params, **arguments})

    return jsonrpc.serve(outer.httprequest, call, outer.dev)


# Route type -> dispatcher(endpoint, url arguments) -> Response.
ROUTE_TYPES: dict[str, Callable[[Callable[..., Any], Mapping[str, Any]], Response]] = {
    "http": _dispatch_http,
    "json": _dispatch_json,
}


@dataclasses.dataclass(frozen=True)
class Endpoint:
    function: Callable[..., Any]
    routing: Routing
    addon: str | None


def _routing(cls: type, name: str) -> Routing | None:
    """The routing of a method, looked up the MRO so an override without ``@route`` keeps
    the route of the method it overrides."""
    for klass in cls.__mro__:
        member = klass.__dict__.get(name)
        routing = getattr(member, "routing", None)
        if isinstance(routing, Routing):
            return routing
    return None


# Types of the web's own files, whatever the system's mime.types says: with nosniff, a
# browser refuses a script or a style sheet served under another type. Others: mimetypes.
STATIC_TYPES = {
    ".css": "text/css",
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".wasm": "application/wasm",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
}


class Root:
    """The WSGI application of an addons path. ``dev``: a --dev mode is on."""

    def __init__(self, addons: Iterable[Addon], dev: bool = False) -> None:
        self.addons = {addon.name: addon for addon in addons}
        self.dev = dev
        self.url_map = Map(strict_slashes=False)
        self.url_map.add(
            Rule("/<addon>/static/<path:filename>", endpoint="static", methods=["GET", "HEAD"])
        )
        for controller in self._leaf_controllers():
            instance = controller()
            addon = addon_of(controller.__module__, self.addons)
            for name in dir(controller):
                routing = _routing(controller, name)
                if routing is None:
                    continue
                endpoint = Endpoint(getattr(instance, name), routing, addon)
                for path in routing.paths:
                    self.url_map.add(Rule(path, endpoint=endpoint, methods=routing.methods))

    def _leaf_controllers(self) -> list[type[Controller]]:
        served = [c for c in _controllers if addon_of(c.__module__, self.addons)]
        return [c for c in served if not any(o is not c and issubclass(o, c) for o in served)]

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        answer = self.handle(environ, start_response)
        return NotFound()(environ, start_response) if answer is None else answer

    def handle(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes] | None:
        """Answer, or return None when no route matches the path (the last handler of the
        chain, see :func:`devserve.app.register_wsgi_handler`)."""
        try:
            endpoint, arguments = self.url_map.bind_to_environ(environ).match()
        except NotFound:
            return None
        except HTTPException as error:  # 405, or a redirect to the canonical URL
            return error(environ, start_response)
        try:
            if endpoint == "static":
                response = self.serve_static(environ, **arguments)
            else:
                assert isinstance(endpoint, Endpoint)
                # Closed once answered: uploaded files are temporary files.
                httprequest = HTTPRequest(environ)
                with httprequest, bound_request(Request(httprequest, endpoint.addon, self.dev)):
                    dispatch = ROUTE_TYPES[endpoint.routing.type]
                    response = dispatch(endpoint.function, arguments)
        except HTTPException as error:
            return error(environ, start_response)
        return response(environ, start_response)

    def serve_static(self, environ: WSGIEnvironment, addon: str, filename: str) -> Response:
        """A file of ``<addon>/static/``, never one outside it (``..``, absolute paths and
        symlinks leading out are a 404)."""
        if addon not in self.addons or "\0" in filename:
            raise NotFound()
        folder = os.path.realpath(self.addons[addon].static_dir)
        target = os.path.realpath(os.path.join(folder, filename))
        if os.path.commonpath([folder, target]) != folder:
            raise NotFound()
        extension = os.path.splitext(filename)[1].lower()
        response = send_from_directory(
            folder, filename, environ, mimetype=STATIC_TYPES.get(extension)
        )
        response.headers["X-Content-Type-Options"] = "nosniff"
        # Always revalidate: an edited file must show on the next reload of the page.
        response.headers["Cache-Control"] = "no-cache"
        return response
