"""XML-RPC and JSON-RPC endpoints over services, for addons apps.

An addon exposes a service by decorating a class; its public methods (no leading
underscore) can then be called, with positional arguments::

    from devserve import rpc

    @rpc.service("inventory")
    class Inventory:
        def count(self, item):
            return 42

==========================  ===============================================================
``/xmlrpc/2/<service>``     XML-RPC; faults with integer codes (:data:`FAULT_CODES`)
``/xmlrpc/<service>``       XML-RPC; Odoo's legacy faults: the faultCode is the message
``/jsonrpc``                JSON-RPC 2.0, params ``{"service", "method", "args": [...]}``
==========================  ===============================================================

Only the services of the addons being served are exposed, plus devserve's own ``common``
(``version``, ``about``, ``addons``). :class:`Endpoints` answers these paths as the first
handler of the addons app's chain. XML bodies are parsed with defusedxml: a document that
declares entities (a "billion laughs") is refused before any expansion.
"""

from __future__ import annotations

import inspect
import logging
import re
import traceback
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from werkzeug.exceptions import MethodNotAllowed
from werkzeug.wrappers import Request as HTTPRequest
from werkzeug.wrappers import Response

from devserve import http, jsonrpc
from devserve._version import __version__
from devserve.addons import Addon
from devserve.errors import AppLoadError, exception_summary
from devserve.jsonrpc import INVALID_PARAMS, METHOD_NOT_FOUND, PARSE_ERROR, RpcError

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIEnvironment

__all__ = ["APPLICATION_ERROR", "PROTOCOL_VERSION", "Common", "Endpoints", "Services", "service"]

_logger = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
APPLICATION_ERROR = 1  # /xmlrpc/2/ fault code of an exception raised by a method (Odoo's)

C = TypeVar("C", bound=type)

# (name, class) in declaration order; Services keeps the ones of the addons it serves.
_services: list[tuple[str, type]] = []


def service(name: str) -> Callable[[C], C]:
    """Expose the decorated class's public methods as the RPC service ``name``; the class is
    instantiated once, without arguments, when the app loads."""
    if not re.fullmatch(r"[A-Za-z_]\w*", name):
        raise ValueError(f"RPC service name {name!r} must be a Python identifier")
    if name == "common":
        raise ValueError("the RPC service name 'common' is devserve's own; choose another")

    def decorate(cls: C) -> C:
        _services.append((name, cls))
        return cls

    return decorate


class Common:
    """devserve's own service: what is serving, and which addons."""

    def __init__(self, addons: Iterable[Addon]) -> None:
        self._addons = {addon.name: str(addon.manifest.get("version", "")) for addon in addons}

    def version(self) -> dict[str, Any]:
        info: list[Any] = [int(p) if p.isdigit() else p for p in __version__.split(".")]
        return {
            "server_version": __version__,
            "server_version_info": [*info, "final", 0],
            "protocol_version": PROTOCOL_VERSION,
        }

    def about(self) -> str:
        return f"devserve {__version__}: a development web server for WSGI apps"

    def addons(self) -> dict[str, str]:
        """The addons served, dependencies first, with their manifest versions."""
        return dict(self._addons)


def _public_methods(instance: object) -> dict[str, Callable[..., Any]]:
    """The methods of the instance's class (and its bases) without a leading underscore:
    the others are never reachable over RPC, whatever the caller asks for."""
    cls = type(instance)
    return {
        name: getattr(instance, name)
        for name in dir(cls)
        if not name.startswith("_") and inspect.isroutine(getattr(cls, name))
    }


class Services:
    """The services an app exposes: ``common`` and those of its addons, by name."""

    def __init__(self, addons: Iterable[Addon]) -> None:
        addons = list(addons)
        served = {addon.module for addon in addons}
        self.methods: dict[str, dict[str, Callable[..., Any]]] = {
            "common": _public_methods(Common(addons))
        }
        self.addon_of: dict[str, str | None] = {"common": None}
        owners: dict[str, type] = {}
        for name, cls in _services:
            module = ".".join(cls.__module__.split(".")[:2])
            if module not in served:
                continue
            if name in owners and owners[name] is not cls:
                raise AppLoadError(
                    f"RPC service {name!r} is declared twice ({_where(owners[name])} and "
                    f"{_where(cls)}); rename one"
                )
            owners[name] = cls
            self.methods[name] = _public_methods(_instantiate(name, cls))
            self.addon_of[name] = module.rpartition(".")[2]

    def lookup(self, service: str, method: str) -> Callable[..., Any]:
        methods = self.methods.get(service)
        if methods is None:
            known = ", ".join(sorted(self.methods))
            raise RpcError(METHOD_NOT_FOUND, f"unknown service {service!r} (known: {known})")
        if method not in methods:
            raise RpcError(METHOD_NOT_FOUND, f"service {service!r} has no method {method!r}")
        return methods[method]


def _where(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def _instantiate(name: str, cls: type) -> object:
    try:
        return cls()
    except Exception as error:
        raise AppLoadError(
            f"RPC service {name!r} ({_where(cls)}) could not be created: "
            f"{exception_summary(error)}; a service class takes no arguments"
        ) from error


class Endpoints:
    """The WSGI handler of ``/xmlrpc/2/<service>``, ``/xmlrpc/<service>`` and ``/jsonrpc``;
    returns None for any other path."""

    def __init__(self, addons: Iterable[Addon], dev: bool = False) -> None:
        self.services = Services(addons)
        self.dev = dev

    def __call__(
        self, environ: WSGIEnvironment, start_response: StartResponse
    ) -> Iterable[bytes] | None:
        path: str = environ.get("PATH_INFO", "")
        if path == "/jsonrpc":
            response = self._post_only(environ) or self._jsonrpc(HTTPRequest(environ))
        elif path.startswith("/xmlrpc/"):
            version, _, name = path[len("/xmlrpc/") :].rpartition("/")
            if version not in ("", "2") or not name:
                return None
            response = self._post_only(environ) or self._xmlrpc(
                HTTPRequest(environ), name, legacy=version == ""
            )
        else:
            return None
        return response(environ, start_response)

    @staticmethod
    def _post_only(environ: WSGIEnvironment) -> Response | None:
        if environ.get("REQUEST_METHOD") == "POST":
            return None
        return MethodNotAllowed(["POST"]).get_response(environ)

    def _call(self, httprequest: HTTPRequest, name: str, method: str, args: Iterable[Any]) -> Any:
        function = self.services.lookup(name, method)
        current = http.Request(httprequest, self.services.addon_of[name], self.dev)
        with http.bound_request(current):
            return jsonrpc.invoke(function, args)

    def _jsonrpc(self, httprequest: HTTPRequest) -> Response:
        def call(rpc: jsonrpc.Call) -> Any:
            params = rpc.params
            if not (
                isinstance(params, dict)
                and isinstance(params.get("service"), str)
                and isinstance(params.get("method"), str)
                and isinstance(params.get("args", []), list)
            ):
                raise RpcError(
                    INVALID_PARAMS,
                    'Invalid params: /jsonrpc takes {"service": "...", "method": "...", '
                    '"args": [...]}',
                )
            service, method = params["service"], params["method"]
            return self._call(httprequest, service, method, params.get("args", []))

        return jsonrpc.serve(httprequest, call, self.dev)

    def _xmlrpc(self, httprequest: HTTPRequest, name: str, legacy: bool) -> Response:
        import xmlrpc.client  # here: most apps never get an XML-RPC call

        try:
            args, method = _loads(httprequest.get_data())
            result = self._call(httprequest, name, method, args)
            body = xmlrpc.client.dumps((result,), methodresponse=True, allow_none=True)
        except RpcError as error:
            body = _fault(error.code, error.message, "", legacy)
        except Exception as error:
            _logger.error("XML-RPC call to %s failed", httprequest.path, exc_info=error)
            details = "".join(traceback.format_exception(error)) if self.dev else ""
            body = _fault(APPLICATION_ERROR, str(error) or type(error).__name__, details, legacy)
        return Response(body, mimetype="text/xml")


def _fault(code: int, message: str, details: str, legacy: bool) -> str:
    """/xmlrpc/2/: an integer code, the message (and, with --dev, the traceback) as the
    string; /xmlrpc/: the message as the code, the traceback (--dev) or nothing as the string."""
    import xmlrpc.client

    if legacy:
        # A string code: typeshed says int, the marshaller writes any type.
        fault = xmlrpc.client.Fault(message, details)  # type: ignore[arg-type]
    else:
        fault = xmlrpc.client.Fault(code, f"{message}\n\n{details}" if details else message)
    return xmlrpc.client.dumps(fault, methodresponse=True, allow_none=True)


def _loads(data: bytes) -> tuple[tuple[Any, ...], str]:
    """The arguments and method name of a ``<methodCall>``, parsed safely: no DTD, no
    entity (defusedxml), so nothing in the document expands or is fetched."""
    import xmlrpc.client

    from defusedxml import DefusedXmlException
    from defusedxml.xmlrpc import DefusedExpatParser

    unmarshaller = xmlrpc.client.Unmarshaller(use_builtin_types=True)
    try:
        parser = DefusedExpatParser(unmarshaller, forbid_dtd=True)
        parser.feed(data)
        parser.close()
        args = unmarshaller.close()
    except DefusedXmlException:
        raise RpcError(PARSE_ERROR, "Parse error: a DTD or an entity declaration") from None
    except Exception as error:  # expat, or a value that is not what it says
        raise RpcError(PARSE_ERROR, f"Parse error: {type(error).__name__}: {error}") from None
    method = unmarshaller.getmethodname()
    if method is None:
        raise RpcError(jsonrpc.INVALID_REQUEST, "Invalid Request: not an XML-RPC <methodCall>")
    return args, method
