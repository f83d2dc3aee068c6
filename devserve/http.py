"""The addons application: routes on controllers, the per-request ``request``, static files.

An addon declares routes on methods of :class:`Controller` subclasses::

    from devserve.http import Controller, request, route

    class Hello(Controller):
        @route("/hello/<int:count>", methods=["GET"])
        def hello(self, count):
            return f"hello x{count} from {request.httprequest.remote_addr}"

:class:`Root` collects the controllers of the loaded addons into one Werkzeug ``Map``.
Route types dispatch through :data:`ROUTE_TYPES`, so new ones (JSON-RPC) plug in there.
"""

from __future__ import annotations

import contextvars
import dataclasses
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar, cast

from werkzeug.exceptions import HTTPException, NotFound
from werkzeug.local import LocalProxy
from werkzeug.routing import Map, Rule
from werkzeug.utils import send_from_directory
from werkzeug.wrappers import Request as HTTPRequest
from werkzeug.wrappers import Response

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
    """The request being served, as ``devserve.http.request`` in a route."""

    def __init__(self, httprequest: HTTPRequest, addon: str | None = None) -> None:
        self.httprequest = httprequest
        self.addon = addon

    @property
    def params(self) -> dict[str, Any]:
        """Query string and form fields, merged (form wins)."""
        return {**self.httprequest.args.to_dict(), **self.httprequest.form.to_dict()}


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


def _dispatch_http(endpoint: Callable[..., Any], arguments: Mapping[str, Any]) -> Response:
    return make_response(endpoint(**arguments))


# Route type -> dispatcher(endpoint, url arguments) -> Response.
ROUTE_TYPES: dict[str, Callable[[Callable[..., Any], Mapping[str, Any]], Response]] = {
    "http": _dispatch_http,
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


class Root:
    """The WSGI application of an addons path."""

    def __init__(self, addons: Iterable[Addon]) -> None:
        self.addons = {addon.name: addon for addon in addons}
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
        httprequest = HTTPRequest(environ)
        try:
            endpoint, arguments = self.url_map.bind_to_environ(environ).match()
            if endpoint == "static":
                response = self.serve_static(environ, **arguments)
            else:
                assert isinstance(endpoint, Endpoint)
                with bound_request(Request(httprequest, endpoint.addon)):
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
        response = send_from_directory(folder, filename, environ)
        response.headers["X-Content-Type-Options"] = "nosniff"
        # Always revalidate: an edited file must show on the next reload of the page.
        response.headers["Cache-Control"] = "no-cache"
        return response
