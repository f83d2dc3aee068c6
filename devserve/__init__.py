"""devserve: a development web server for Python WSGI apps and addons.

The public names are imported lazily: ``python -m devserve`` must be able to set things up
(gevent's monkey-patching, for one) before Werkzeug and the threading module are imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from devserve.app import register_wsgi_handler
    from devserve.cache import cached
    from devserve.errors import DevserveError, ExitCode
    from devserve.http import Controller, Response, request, route

__all__ = [
    "Controller",
    "DevserveError",
    "ExitCode",
    "Response",
    "cached",
    "register_wsgi_handler",
    "request",
    "route",
    "run",
]
from devserve._version import __version__ as __version__

_LAZY = {
    "cached": "devserve.cache",
    "Controller": "devserve.http",
    "Response": "devserve.http",
    "request": "devserve.http",
    "route": "devserve.http",
    "DevserveError": "devserve.errors",
    "ExitCode": "devserve.errors",
    "register_wsgi_handler": "devserve.app",
}


def run(target: Any = None, **settings: Any) -> int:
    """Serve ``target`` until stopped, as ``devserve`` on the command line would.

    ``target`` is a WSGI callable, a ``"module:attribute"`` string or an addons folder;
    ``settings`` use the declared names (``http_port=0``, ``dev="reload"``,
    ``addons_path=[...]``), on top of the config file and ``DEVSERVE_*`` variables. Blocks
    and returns the exit code. With ``dev="reload"``, a script that calls this under
    ``if __name__ == "__main__":`` is re-executed on each reload and lands here again.
    """
    from devserve import runtime

    return runtime.run(target, dict(settings))


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'devserve' has no attribute {name!r}")
