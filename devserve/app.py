"""What is served: the settings' target turned into a WSGI callable, and what it serves
(:class:`Served`: the callable imported for ``--app``, the addons imported for an addons
path: what cron and RPC serve, taken from here rather than from a registry).

``--app module:attribute`` (or ``module:factory()``) imports that callable with the current
directory on ``sys.path``; an addons path becomes :class:`devserve.http.Root` over its addons.

Both go through the same wrapping (:func:`wrap_app`), so every entry point that calls
:func:`load_app` (the CLI, ``devserve.wsgi``) serves the same thing:

- the handler chain: WSGI handlers registered with :func:`register_wsgi_handler` (at import
  time, by addons or by the app's modules) are tried in order; the first that returns an
  iterable answers. For an addons path the chain is the RPC endpoints, the handlers, then the
  addons' routes, and a path nobody answers is a 404 "No handler found". A plain app is the
  last handler (it always answers); with no handler registered it is served as it is, with
  no extra call per request;
- ``--proxy-mode``: Werkzeug's ``ProxyFix`` for the requests that carry ``X-Forwarded-Host``.

An app that fails to load under ``--dev reload`` is served as :func:`error_app`: a 500 page
that says why, until a watched file (the project's, and those of the traceback,
:func:`traceback_files`) changes.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import logging
import os
import sys
import traceback
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from devserve.config import Settings
from devserve.errors import AppLoadError, ConfigError, NotWSGIError, exception_summary

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

    from devserve.addons import Addon

__all__ = [
    "HandlerChain",
    "ProxyMode",
    "Served",
    "WSGIHandler",
    "check_target",
    "check_wsgi",
    "current_folder_importable",
    "describe_target",
    "error_app",
    "import_app",
    "is_asgi",
    "load",
    "load_app",
    "load_or_error",
    "register_wsgi_handler",
    "traceback_files",
    "wrap_app",
]

_logger = logging.getLogger(__name__)

# A WSGI callable that may pass: it returns None (without calling start_response) to let the
# next handler answer. A string annotation, so _typeshed is only needed by type checkers.
WSGIHandler = Callable[["WSGIEnvironment", "StartResponse"], Iterable[bytes] | None]

_handlers: list[WSGIHandler] = []  # in registration order


def register_wsgi_handler(handler: WSGIHandler) -> None:
    """Try ``handler(environ, start_response)`` on every request, before the addons' routes
    (or the plain app), after the handlers registered before it. It returns an iterable to
    answer, or None to pass. Register at import time: the chain is built when the app loads.
    """
    if handler not in _handlers:  # a module imported twice registers once
        _handlers.append(handler)


NO_HANDLER = b"No handler found\n"


def _no_handler(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
    start_response(
        "404 Not Found",
        [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(NO_HANDLER)))],
    )
    return [NO_HANDLER]


class HandlerChain:
    """Handlers tried in order; the first answer wins; none: 404 "No handler found"."""

    def __init__(self, handlers: Sequence[WSGIHandler]) -> None:
        self.handlers = tuple(handlers)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        for handler in self.handlers:
            answer = handler(environ, start_response)
            if answer is not None:
                return answer
        return _no_handler(environ, start_response)


class ProxyMode:
    """``--proxy-mode``: the client's address, scheme and host taken from a reverse proxy's
    ``X-Forwarded-For``/``-Proto``/``-Host``, for the requests that carry
    ``X-Forwarded-Host`` only (as Odoo does): without it, nothing forwarded is trusted."""

    def __init__(self, app: WSGIApplication) -> None:
        from werkzeug.middleware.proxy_fix import ProxyFix

        self.app = app
        self.fixed = ProxyFix(app, x_for=1, x_proto=1, x_host=1)

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if "HTTP_X_FORWARDED_HOST" in environ:
            return self.fixed(environ, start_response)
        return self.app(environ, start_response)


def wrap_app(app: WSGIApplication, settings: Settings) -> WSGIApplication:
    """A plain WSGI app as devserve serves it: behind the registered handlers, if any, and
    ``--proxy-mode``. (``load_app`` does it; the CLI too, for an app handed to ``run()``.)"""
    if _handlers:
        app = HandlerChain([*_handlers, app])
    return _proxy_mode(app, settings)


def _proxy_mode(app: WSGIApplication, settings: Settings) -> WSGIApplication:
    return ProxyMode(app) if settings.proxy_mode else app


def check_target(settings: Settings) -> None:
    if not (settings.app or settings.addons_path):
        raise ConfigError(
            "nothing to serve: give an addons folder or a module:attribute WSGI app "
            "(for example: devserve examples/addons)"
        )


def current_folder_importable() -> str:
    """Put the current folder first on ``sys.path`` (as ``python -m`` does); return it."""
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    return cwd


@dataclasses.dataclass(frozen=True)
class Served:
    """What a process serves."""

    app: WSGIApplication  # as devserve serves it: wrapped in the handler chain, --proxy-mode
    imported: WSGIApplication | None = None  # --app's callable as imported (the framework's)
    addons: tuple[Addon, ...] = ()  # an addons path's, imported, in dependency order
    failure: BaseException | None = None  # why the target failed to load (an error page)


def load_app(settings: Settings) -> WSGIApplication:
    """The WSGI callable the settings name. Raises ConfigError or AppLoadError."""
    return load(settings).app


def load(settings: Settings) -> Served:
    """What the settings name, loaded (:class:`Served`). Raises ConfigError or
    AppLoadError."""
    check_target(settings)
    if settings.app:
        imported = import_app(settings.app)
        return Served(wrap_app(imported, settings), imported)
    if settings.addons_path:
        served = _addons_app(settings)
        return dataclasses.replace(served, app=_proxy_mode(served.app, settings))
    raise AssertionError("unreachable: check_target() passed")  # pragma: no cover


def _addons_app(settings: Settings) -> Served:
    # Imported here: a plain WSGI app starts (and reloads) without the addons machinery.
    from devserve import addons, http, rpc

    found = addons.discover(settings.addons_path)
    addons.import_addons(found, settings.addons_path)
    dev = bool(settings.dev)
    root = http.Root(found, dev)
    chain = HandlerChain([rpc.Endpoints(found, dev), *_handlers, root.handle])
    return Served(chain, addons=tuple(found))


def describe_target(settings: Settings, given: object = None) -> str:
    if given is not None:
        name = getattr(given, "__qualname__", type(given).__qualname__)
        return f"{getattr(given, '__module__', '?')}:{name}"
    if settings.app:
        return settings.app
    return "addons in " + ", ".join(settings.addons_path)


def _parse_spec(spec: str) -> tuple[str, str, tuple[Any, ...] | None]:
    """``pkg.mod:name`` or ``pkg.mod:factory(literal, ...)`` -> (module, name, call args)."""
    module, _, expression = spec.partition(":")
    problem = f"{spec!r} is not module:attribute or module:factory()"
    if not module or not expression:
        raise ConfigError(f"{problem}; for example mypkg.wsgi:app")
    try:
        node = ast.parse(expression.strip(), mode="eval").body
    except SyntaxError:
        raise ConfigError(f"{problem}; for example mypkg.wsgi:create_app()") from None
    if isinstance(node, ast.Name):
        return module, node.id, None
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        try:
            return module, node.func.id, tuple(ast.literal_eval(arg) for arg in node.args)
        except ValueError:
            raise ConfigError(f"{problem}: factory arguments must be literals") from None
    raise ConfigError(f"{problem}; for example mypkg.wsgi:create_app()")


def import_app(spec: str) -> WSGIApplication:
    module_name, name, call_args = _parse_spec(spec)
    cwd = current_folder_importable()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and (module_name + ".").startswith(error.name + "."):
            raise AppLoadError(
                f"cannot import {module_name!r}: no module named {error.name!r} in {cwd} or "
                "on sys.path; check the spelling, or start devserve from the project folder"
            ) from error
        raise AppLoadError(f"importing {module_name!r} failed: {exception_summary(error)}") from (
            error
        )
    except Exception as error:
        raise AppLoadError(f"importing {module_name!r} failed: {exception_summary(error)}") from (
            error
        )
    try:
        app = getattr(module, name)
    except AttributeError:
        raise AppLoadError(
            f"module {module_name!r} has no attribute {name!r}; check the name after the colon"
        ) from None
    if call_args is not None:
        try:
            app = app(*call_args)
        except Exception as error:
            raise AppLoadError(f"calling {spec!r} failed: {exception_summary(error)}") from error
    if not callable(app):
        raise AppLoadError(f"{spec!r} is a {type(app).__name__}, not a WSGI callable")
    check_wsgi(app, spec)
    return app  # type: ignore[no-any-return]


def is_asgi(app: object) -> bool:
    """Whether ``app`` is an ASGI app, told from the callable without calling it: a
    coroutine function (or an object whose ``__call__`` is one), or the ASGI 3 signature
    ``(scope, receive, send)``."""
    import inspect

    if inspect.iscoroutinefunction(app):
        return True
    plain = inspect.isfunction(app) or inspect.ismethod(app) or inspect.isclass(app)
    if not plain and inspect.iscoroutinefunction(type(app).__call__):
        return True
    try:
        parameters = inspect.signature(app).parameters.values()  # type: ignore[arg-type]
    except (TypeError, ValueError):  # a builtin without a signature
        return False
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    required = [p for p in parameters if p.kind in positional and p.default is p.empty]
    return len(required) == 3


def check_wsgi(app: object, what: str) -> None:
    """Refuse an ASGI app at start, with what to run instead (NotWSGIError)."""
    if not is_asgi(app):
        return
    module = what.partition(":")[0]
    instead = f"run it with an ASGI server, such as 'uvicorn {what} --reload'"
    if module.endswith(".asgi"):  # Django's asgi.py: its wsgi.py is beside it
        instead += f", or serve the WSGI side: devserve {module[:-5]}.wsgi:application"
    raise NotWSGIError(
        f"{what!r} is an ASGI app (async, called with scope, receive and send), and devserve "
        f"serves WSGI apps: {instead}"
    )


# --- the app failed to load: a page that says why ---


def traceback_files(error: BaseException) -> list[str]:
    """The source files named in an exception's traceback (and a SyntaxError's file)."""
    files = []
    current: BaseException | None = error
    while current is not None:
        if isinstance(current, SyntaxError) and current.filename:
            files.append(current.filename)
        files.extend(frame.filename for frame in traceback.extract_tb(current.__traceback__))
        current = current.__cause__
    return sorted({f for f in files if os.path.isfile(f)})


def error_app(error: BaseException) -> WSGIApplication:
    """Answers every request with a 500 showing why the app failed to load."""
    cause = error.__cause__ or error
    details = "".join(traceback.format_exception(type(cause), cause, cause.__traceback__))
    summary = str(error)

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> list[bytes]:
        if "text/html" in environ.get("HTTP_ACCEPT", ""):
            import html

            body = _ERROR_PAGE.format(
                summary=html.escape(summary), details=html.escape(details)
            ).encode()
            content_type = "text/html; charset=utf-8"
        else:
            body = (
                f"{summary}\n\n{details}\ndevserve reloads when a watched file changes.\n".encode()
            )
            content_type = "text/plain; charset=utf-8"
        start_response(
            "500 Internal Server Error",
            [("Content-Type", content_type), ("Content-Length", str(len(body)))],
        )
        return [body]

    return app


_ERROR_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>App failed to load</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem}}
pre{{background:#fee;padding:1rem;overflow:auto}}</style></head>
<body><h1>The app failed to load</h1><p>{summary}</p><pre>{details}</pre>
<p>devserve is watching: save a fix and reload this page.</p></body></html>
"""


def load_or_error(settings: Settings, first_start: bool) -> tuple[Served, list[str]]:
    """What is served, and the files to watch besides the project's. With --dev reload,
    an app that fails to load is replaced by a 500 page that shows why, and the files of
    the traceback are watched too. An ASGI app is refused at first start: serving an error
    page could not make it work."""
    try:
        return load(settings), []
    except (AppLoadError, ConfigError) as error:
        if not settings.reload or (isinstance(error, NotWSGIError) and first_start):
            raise
        _logger.error(
            "%s; serving the error until a watched file changes",
            error,
            exc_info=error.__cause__ or error,
        )
        return Served(error_app(error), failure=error), traceback_files(error)
