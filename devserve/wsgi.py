"""Production entry point: ``gunicorn devserve.wsgi:application`` serves what ``devserve``
would serve, from the same settings.

``application`` is built when this module is imported, from the ``DEVSERVE_*`` environment
variables and the config file (``DEVSERVE_CONFIG``, else ``~/.devserverc``); there is no
command line to read. Only what is served comes from them (the addons path or the app, and
what :func:`devserve.app.load_app` applies); listening, workers and timeouts are the WSGI
server's business. Settings that make no sense there (``--dev``, ports, limits) are ignored.

Logging stays the WSGI server's: only when nothing handles the root logger do devserve's and
the addons' loggers get a plain handler on stderr. A setting or an addon that fails ends
the import with one ``devserve: error: ...`` line and exit code 3 (settings) or 4 (import),
which gunicorn reports as "Worker failed to boot" or "App failed to load" and stops.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from devserve import addons, app, config, log
from devserve.errors import DevserveError, report

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

__all__ = ["application", "create_application"]


def create_application(environ: Mapping[str, str] | None = None) -> WSGIApplication:
    """The WSGI callable the environment's settings name (``os.environ`` by default).
    Raises ConfigError or AppLoadError."""
    settings = config.resolve({}, os.environ if environ is None else environ)
    log.setup_embedded_logging(settings.log_level, ("devserve", addons.NAMESPACE))
    return app.load_app(settings)


def _application() -> WSGIApplication:
    try:
        return create_application()
    except DevserveError as error:
        # SystemExit, not the error: a WSGI server would print its traceback, and the exit
        # code tells gunicorn not to restart a worker that can only fail again.
        raise SystemExit(report(error)) from None


application = _application()
